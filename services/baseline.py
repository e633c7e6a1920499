"""The comparison point: the same model served by BentoML's own adaptive batching.

`@bentoml.api(batchable=True)` endpoints over the same artifact, processor and ONNX Runtime
backend as zooserve, so a benchmark compares the batching and serving paths alone.  Used by
loadtests/bench_batching.py; not part of the product.
"""

from __future__ import annotations

import base64
import os

import bentoml

from services.codecs import png
from services.config import load_settings
from services.runtime import build_backend, load_artifact
from zoo import get
from zoo.api import collate, split

MAX_BATCH = int(os.environ.get("ZOOSERVE_BASELINE_MAX_BATCH", "32"))


@bentoml.service(name="baseline", workers=1, traffic={"timeout": 60})
class Baseline:
    def __init__(self) -> None:
        settings = load_settings()
        self.models = {}
        for name in settings.models:
            artifact = load_artifact(name, settings)
            plugin = get(name).from_config_dict(artifact.metadata["config"])
            self.models[name] = (plugin, plugin.processor(artifact.path), build_backend(plugin, artifact, settings))

    def _run(self, name: str, items: list, task: str, options: dict) -> list:
        plugin, processor, backend = self.models[name]
        rows = [processor.preprocess(item) for item in items]
        outputs = split(backend.run(collate(rows, plugin.spec)), len(rows))
        return [processor.postprocess(row, task, options) for row in outputs]  # type: ignore[arg-type]

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def generate(self, seeds: list[int]) -> list[str]:
        images = self._run("gan_generator", seeds, "generate", {})
        return [base64.b64encode(png(image)).decode() for image in images]

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def classify(self, images: list[str]) -> list[list[dict]]:
        name = os.environ.get("ZOOSERVE_BASELINE_CLASSIFIER", "resnet50")
        return self._run(name, [base64.b64decode(i) for i in images], "classify", {"top_k": 5})

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=10_000)
    def sentiment(self, texts: list[str]) -> list[dict]:
        return self._run(os.environ.get("ZOOSERVE_BASELINE_TEXT", "lstm_sentiment"), texts, "sentiment", {})
