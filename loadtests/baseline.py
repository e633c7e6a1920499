"""The comparison point: the same model served by BentoML's own adaptive batching.

`@bentoml.api(batchable=True)` endpoints over the same artifact, processor and ONNX Runtime
backend as zooserve, so a benchmark compares the batching and serving paths alone.  Used by
loadtests/bench_batching.py; not part of the product.
"""

from __future__ import annotations

import base64
import os

import bentoml

from services.api.tasks import TASKS
from services.config import load_settings
from services.runtime.loading import load_from_store
from zoo.api import collate, split

MAX_BATCH = int(os.environ.get("ZOOSERVE_BASELINE_MAX_BATCH", "32"))


@bentoml.service(name="baseline", workers=1, traffic={"timeout": 60})
class Baseline:
    def __init__(self) -> None:
        settings = load_settings()
        self.models = {name: load_from_store(name, settings) for name in settings.models}

    def _run(self, name: str, items: list, task: str) -> list:
        """The same processor, runner and JSON encoding as zooserve, without its batcher."""
        parts = self.models[name]
        codec = TASKS[task]
        options = codec.read_options({})
        rows = [parts.processor.preprocess(item) for item in items]
        outputs = split(parts.runner.run(collate(rows, parts.spec)), len(rows))
        return [codec.to_json(parts.processor.postprocess(row, task), options) for row in outputs]

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def generate(self, seeds: list[int]) -> list[str]:
        return [result["image"] for result in self._run("gan_generator", seeds, "generate")]

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def classify(self, images: list[str]) -> list[list[dict]]:
        name = os.environ.get("ZOOSERVE_BASELINE_CLASSIFIER", "resnet50")
        return self._run(name, [base64.b64decode(i) for i in images], "classify")

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def sentiment(self, texts: list[str]) -> list[dict]:
        return self._run(os.environ.get("ZOOSERVE_BASELINE_TEXT", "lstm_sentiment"), texts, "sentiment")
