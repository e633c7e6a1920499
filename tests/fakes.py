"""A model and a task of the tests' own, on a fake runner: what in-process tests serve.

A test plugin with a task of its own (`count`: words per text) shows what each addition
touches: the model is one plugin class, and the task is one entry of the task table (with its
result type).  The runner doubles, the processor halves: a row really went through both.
`fake_loader` builds the parts as `load_from_store` would, without a model store, so a hub (and
the HTTP app, the v2 models and the gRPC server over it) runs the real code on this runner.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel

import zoo
from services.api import tasks
from services.api.tensors import OutputTensor, TensorMeta
from services.config import Settings
from services.runtime.loading import Parts


# -- a new task: its result type and its table entry ---------------------------------------------
class WordsResponse(BaseModel):
    model: str
    results: list[dict[str, int]]


@dataclass(frozen=True)
class WordCount:
    words: int


COUNT = tasks.TaskCodec(
    name="count",
    summary="Words per text",
    result_type=WordCount,
    field="texts",
    decode_item=tasks.text_item,
    to_json=lambda result, options: {"words": result.words},
    v2_input=tasks.TEXTS,
    v2_outputs=(TensorMeta("words", "INT64", (-1,)),),
    to_v2=lambda results, options: (
        {"words": OutputTensor("words", "INT64", np.array([r.words for r in results], np.int64))},
        {},
    ),
    request_doc=tasks.task_docs.TextRequest,
    response_doc=WordsResponse,
)


# -- a new model: one plugin ---------------------------------------------------------------------------
@dataclass(frozen=True)
class CounterConfig:
    max_words: int = 1000


class CounterProcessor(zoo.Processor):
    inline: ClassVar[bool] = True

    def __init__(self, limits: zoo.InputLimits) -> None:
        self.limits = limits

    def preprocess(self, item: Any) -> zoo.Row:
        text = zoo.check_text(item, self.limits.max_text_chars)
        return {"length": np.array([len(text.split())], np.int64)}

    def postprocess(self, row: zoo.Row, task: str) -> WordCount:
        return WordCount(int(row["doubled"][0]) // 2)


class WordCounter(zoo.Plugin[CounterConfig]):
    """Counts words (the runner doubles, the processor halves: the row really went through it)."""

    name: ClassVar[str] = "word_counter"
    tasks: ClassVar[tuple[str, ...]] = ("count",)
    Config: ClassVar[type] = CounterConfig

    @property
    def spec(self) -> zoo.ExportSpec:
        bound = (0, self.config.max_words)
        return zoo.ExportSpec(
            inputs=(zoo.TensorSpec("length", "int64", (zoo.BATCH, 1), range=bound),),
            outputs=(zoo.TensorSpec("doubled", "int64", (zoo.BATCH, 1)),),
        )

    def build(self) -> Any:
        raise NotImplementedError("served from its fake runner only")

    def processor(self, assets: Path, limits: zoo.InputLimits = zoo.DEFAULT_LIMITS) -> zoo.Processor:
        return CounterProcessor(limits)

    def example_items(self) -> list[Any]:
        return ["one two", "three"]


class DoublingRunner:
    name = "fake"
    device = "cpu"

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.gate = threading.Event()  # cleared: every batch waits in the runner until it is set
        self.gate.set()
        self.entered = threading.Event()  # set when a batch reaches the runner

    def run(self, feeds: zoo.Batch, outputs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        self.entered.set()
        self.gate.wait(30)
        self.batches.append(len(feeds["length"]))
        return {"doubled": feeds["length"] * 2}


RUNNER = DoublingRunner()


def fake_loader(name: str, settings: Settings) -> Parts:
    plugin = zoo.get(name)()
    return Parts(plugin, plugin.processor(Path("."), settings.limits.for_items()), RUNNER, "v1", {"parity": {}})


@contextlib.contextmanager
def word_counter_registered() -> Iterator[None]:
    """The `count` task and the `word_counter` model in the table and the registry, then out again."""
    zoo.register(WordCounter)
    tasks.register(COUNT)
    try:
        yield
    finally:
        tasks.unregister("count")
        zoo.unregister("word_counter")
