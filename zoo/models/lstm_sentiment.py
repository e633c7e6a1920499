"""The tutorial bidirectional-LSTM sentiment classifier, with its word vocabulary.

Embedding(10000, 100, padding_idx=0) -> one-layer bidirectional LSTM(256, batch_first)
-> [final forward state; final backward state] -> Dropout(0.5) -> Linear(512, 2).

Padding never changes a text's result: the model computes each row's length from its ids
(<pad> is 0) and packs the batch, so the final states are those of the real tokens, in
torch and in the exported ONNX LSTM (which receives the lengths as `sequence_lens`).

A checkpoint is a folder: model.safetensors (or model.pth) with the state dict, vocab.json
(word -> id) and config.json (vocab_size, embed_dim, hidden, labels, max_tokens), so the
tokenizer travels with the weights.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from zoo.api import (
    BATCH,
    DEFAULT_LIMITS,
    SEQUENCE,
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
)
from zoo.registry import register
from zoo.results import Sentiment
from zoo.text import (
    VOCAB_FILE,
    WordTokenizer,
    check_text,
    check_word_vocab,
    default_word_vocab,
    read_labels,
    write_labels,
)
from zoo.weights import load_file_into, seeded

if TYPE_CHECKING:
    import torch

WEIGHT_FILES = ("model.safetensors", "model.pth", "model.pt", "pytorch_model.bin")
CONFIG_FIELDS = ("vocab_size", "embed_dim", "hidden", "labels", "max_tokens", "dropout")


@dataclass(frozen=True)
class LstmConfig:
    vocab_size: int = 10000
    embed_dim: int = 100
    hidden: int = 256
    dropout: float = 0.5
    labels: tuple[str, ...] = ("negative", "positive")
    max_tokens: int = 256  # texts are cut to this many words
    max_batch: int = 64  # the largest batch a TensorRT profile accepts


class LstmProcessor(Processor):
    def __init__(
        self, tokenizer: WordTokenizer, labels: tuple[str, ...], max_tokens: int, limits: InputLimits = DEFAULT_LIMITS
    ) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_tokens = max_tokens
        self.max_chars = limits.max_text_chars

    def preprocess(self, item: Any) -> Row:
        return {"input_ids": self.tokenizer.encode(check_text(item, self.max_chars), self.max_tokens)}

    def postprocess(self, row: Row, task: Task) -> Sentiment:
        if task != "sentiment":
            raise ValueError(f"lstm_sentiment does not serve the task {task!r}")
        return Sentiment.from_logits(row["logits"], self.labels)

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        return {"logits": self.labels}


def weights_file(folder: Path) -> Path:
    """The state-dict file of a checkpoint folder."""
    for name in WEIGHT_FILES:
        if (folder / name).is_file():
            return folder / name
    raise WeightsMismatch(f"{folder} has none of {', '.join(WEIGHT_FILES)}")


def _read_vocab(folder: Path, vocab_size: int) -> dict[str, int]:
    try:
        vocab = json.loads((folder / VOCAB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsMismatch(f"{folder}: no readable {VOCAB_FILE} ({exc})") from None
    try:
        check_word_vocab(vocab, vocab_size, str(folder / VOCAB_FILE))
    except ValueError as exc:
        raise WeightsMismatch(str(exc)) from None
    return vocab


@register
class LstmSentiment(Plugin[LstmConfig]):
    """Sentiment of a text with the tutorial BiLSTM classifier."""

    name: ClassVar[str] = "lstm_sentiment"
    tasks: ClassVar[tuple[Task, ...]] = ("sentiment",)
    Config: ClassVar[type] = LstmConfig
    test_overrides: ClassVar[Mapping[str, Any]] = {"vocab_size": 600, "embed_dim": 16, "hidden": 24, "max_tokens": 64}

    def config_from_weights(self, config: LstmConfig, weights: Path | None) -> LstmConfig:
        """Sizes, labels and max_tokens from the checkpoint folder's config.json."""
        if weights is None:
            return config
        if not weights.is_dir():
            raise WeightsMismatch(
                f"{weights}: lstm_sentiment weights are a folder with {WEIGHT_FILES[0]} (or {WEIGHT_FILES[1]}), "
                f"{VOCAB_FILE} and config.json"
            )
        try:
            saved = json.loads((weights / "config.json").read_text())
        except (OSError, ValueError) as exc:
            raise WeightsMismatch(f"{weights}: no readable config.json ({exc})") from None
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in CONFIG_FIELDS}
        config = dataclasses.replace(config, **values)
        weights_file(weights)  # fail now, not at export time
        _read_vocab(weights, config.vocab_size)
        return config

    @property
    def spec(self) -> ExportSpec:
        c = self.config
        return ExportSpec(
            inputs=(TensorSpec("input_ids", "int64", (BATCH, SEQUENCE), pad_value=0, range=(0, c.vocab_size - 1)),),
            outputs=(TensorSpec("logits", "float32", (BATCH, len(c.labels))),),
            atol=1e-4,
            rtol=1e-3,
            # torch.export cannot trace pack_padded_sequence (its batch sizes are data), while
            # the TorchScript exporter maps packed input to ONNX LSTM with `sequence_lens`.
            exporter="torchscript",
            trt_profile={"input_ids": ShapeRange((1, 1), (min(8, c.max_batch), 64), (c.max_batch, c.max_tokens))},
            max_sequence=c.max_tokens,
            int8=Int8Spec("dynamic", min_top1=0.95),  # dynamic int8 LSTM and MatMul
        )

    def build(self) -> torch.nn.Module:
        c = self.config
        seeded(self.seed)
        module = _classifier_class()(c.vocab_size, c.embed_dim, c.hidden, len(c.labels), c.dropout)
        if self.weights is not None:
            load_file_into(module, weights_file(self.weights))
        return module.eval()

    def vocab(self) -> dict[str, int]:
        """The checkpoint's vocabulary, or the generated default of `vocab_size` words."""
        if self.weights is not None:
            return _read_vocab(self.weights, self.config.vocab_size)
        return default_word_vocab(self.config.vocab_size)

    def write_assets(self, dest: Path) -> None:
        (dest / VOCAB_FILE).write_text(json.dumps(self.vocab(), ensure_ascii=False))
        write_labels(self.config.labels, dest)

    def processor(self, assets: Path, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        tokenizer = WordTokenizer.from_file(assets / VOCAB_FILE)
        return LstmProcessor(tokenizer, read_labels(assets), self.config.max_tokens, limits)

    def example_items(self) -> list[Any]:
        return [
            "A wonderful film.",
            "The acting was fine but the story was slow and predictable, and after the first hour I had stopped "
            "caring about any of the characters. The music was lovely, the camera work was beautiful, yet the "
            "ending felt cheap.",
            "Not bad at all: funny, warm and clever.",
        ]


def save_checkpoint(
    module_or_state: Any, vocab: Mapping[str, int], config: LstmConfig | Mapping[str, Any], folder: Path
) -> Path:
    """Write a checkpoint folder (model.safetensors, vocab.json, config.json) that `weights=` loads."""
    import torch
    from safetensors.torch import save_file

    values = dataclasses.asdict(config) if isinstance(config, LstmConfig) else dict(config)
    saved = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in CONFIG_FIELDS}
    check_word_vocab(vocab, int(saved.get("vocab_size", LstmConfig.vocab_size)), "vocab")
    state = module_or_state.state_dict() if isinstance(module_or_state, torch.nn.Module) else module_or_state
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(folder / WEIGHT_FILES[0]))
    (folder / VOCAB_FILE).write_text(json.dumps(dict(vocab), ensure_ascii=False))
    (folder / "config.json").write_text(json.dumps(saved, indent=1, sort_keys=True))
    return folder


@cache
def _classifier_class() -> type:
    """The module class, made on first use so that importing this file never imports torch."""
    import torch
    from torch import nn

    class SentimentLSTM(nn.Module):
        def __init__(self, vocab_size: int, embed_dim: int, hidden: int, num_labels: int, dropout: float) -> None:
            super().__init__()
            self.hidden = hidden
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
            self.lstm = nn.LSTM(embed_dim, hidden, num_layers=1, bidirectional=True, batch_first=True)
            self.dropout = nn.Dropout(dropout)
            self.fc = nn.Linear(2 * hidden, num_labels)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            # Lengths from the ids themselves (<pad> is 0, padding is trailing), so padding a row
            # inside a batch leaves its result unchanged; at least 1, as packing requires.
            lengths = (input_ids != 0).sum(dim=1).clamp(min=1)
            embedded = self.embedding(input_ids)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
            # Explicit zero states: with hx=None the TorchScript ONNX exporter sizes them from
            # the packed batch sizes and fails in its peephole pass (vector range error).
            zeros = embedded.new_zeros((2, input_ids.shape[0], self.hidden))
            _, (final, _) = self.lstm(packed, (zeros, zeros))
            # final[-2] is the forward direction at each row's last real token, final[-1] the
            # backward direction at its first token.
            return self.fc(self.dropout(torch.cat((final[-2], final[-1]), dim=1)))

    return SentimentLSTM
