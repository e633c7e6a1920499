"""The model zoo: one plugin per file, discovered automatically, and the public plugin API.

What a plugin author imports comes from here (and stays stable): the contract (`Plugin`,
`Processor`, `ExportSpec`, `TensorSpec`, `InputLimits`, `collate`/`split`, `BadInput`), the
registry (`register`, `get`, `create`, `list_models`), the typed results of each task, and
the shared building blocks of the vision and text plugins.

Importing `zoo` imports every plugin module of `zoo/models/` (the built-in plugins: adding a
model touches one file there), and then every out-of-tree plugin of the `zooserve.plugins`
entry-point group.  The framework modules (this folder) register nothing.  No module imports
torch at import time.
"""

from __future__ import annotations

import importlib
import pkgutil

from zoo import models as _models
from zoo.api import (
    BATCH,
    DEFAULT_LIMITS,
    SEQUENCE,
    BadInput,
    Batch,
    ExportSpec,
    InputLimits,
    Int8Spec,
    Plugin,
    Processor,
    Row,
    ShapeRange,
    Task,
    TensorSpec,
    WeightsMismatch,
    WeightsSource,
    WeightsUnavailable,
    collate,
    split,
)
from zoo.registry import UnknownModel, create, get, list_models, register, unregister
from zoo.results import Classification, Embedding, GeneratedImage, Sentiment, softmax
from zoo.text import WordTokenizer, check_text, load_checkpoint_tokenizer, read_labels, write_labels
from zoo.vision import (
    ImageClassifier,
    ImageClassifierConfig,
    ImagePreset,
    ImageProcessor,
    classifier_config,
    decode_image,
    example_image,
)
from zoo.weights import load_file_into, read_state_dict, seeded

# Every module of zoo/models is a plugin; the framework modules beside it never are.
for _module in pkgutil.iter_modules(_models.__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{_models.__name__}.{_module.name}")

# Out-of-tree plugins last: they import this package's public API, and a clash with a
# built-in name must name the built-in.
from zoo.plugins import load_entry_points  # noqa: E402

load_entry_points()

__all__ = [
    "BATCH",
    "DEFAULT_LIMITS",
    "SEQUENCE",
    "BadInput",
    "Batch",
    "Classification",
    "Embedding",
    "ExportSpec",
    "GeneratedImage",
    "ImageClassifier",
    "ImageClassifierConfig",
    "ImagePreset",
    "ImageProcessor",
    "InputLimits",
    "Int8Spec",
    "Plugin",
    "Processor",
    "Row",
    "Sentiment",
    "ShapeRange",
    "Task",
    "TensorSpec",
    "UnknownModel",
    "WeightsMismatch",
    "WeightsSource",
    "WeightsUnavailable",
    "WordTokenizer",
    "check_text",
    "classifier_config",
    "collate",
    "create",
    "decode_image",
    "example_image",
    "get",
    "list_models",
    "load_checkpoint_tokenizer",
    "load_file_into",
    "read_labels",
    "read_state_dict",
    "register",
    "seeded",
    "softmax",
    "split",
    "unregister",
    "write_labels",
]
