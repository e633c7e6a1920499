"""BERT (transformers): sentiment logits and mean-pooled sentence embeddings from one module.

The default is bert-base-uncased's architecture with deterministic random weights and a
local WordPiece tokenizer.  Any local Hugging Face BERT checkpoint folder (config.json,
model.safetensors or pytorch_model.bin, tokenizer.json or vocab.txt) loads fully offline;
its config.json completes our config, so the export spec describes its real tensors.
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
    WeightsSource,
)
from zoo.registry import register
from zoo.results import Embedding, Sentiment
from zoo.sources import HF, hf_snapshot
from zoo.text import (
    TOKENIZER_FILE,
    check_text,
    default_tokenizer,
    encode_pieces,
    has_checkpoint_tokenizer,
    load_checkpoint_tokenizer,
    read_labels,
    save_tokenizer,
    truncating,
    write_labels,
)
from zoo.weights import seeded

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

log = logging.getLogger(__name__)

WEIGHT_FILES = tuple(
    f"{name}{ext}" for name in ("model.safetensors", "pytorch_model.bin") for ext in ("", ".index.json")
)
# What `hf:` fetches of a repository: the config, one weights format, the tokenizer files.
HF_PATTERNS = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
HF_SAFETENSORS = ("model.safetensors", "model.safetensors.index.json", "model-*-of-*.safetensors")
HF_TORCH_BIN = ("pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*-of-*.bin")
# Heads a bare BertModel checkpoint lacks; they are initialized, deterministically, instead.
OPTIONAL_PREFIXES = ("classifier.", "bert.pooler.")
# Our config field -> the transformers BertConfig / config.json key.
HF_KEYS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_layers": "num_hidden_layers",
    "num_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "max_position": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "hidden_act": "hidden_act",
    "layer_norm_eps": "layer_norm_eps",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
}


@dataclass(frozen=True)
class BertConfig:
    """bert-base-uncased sizes; a checkpoint's config.json overrides the architecture fields."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    type_vocab_size: int = 2
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    labels: tuple[str, ...] = ("negative", "positive")
    max_tokens: int = 512  # texts are truncated to this many tokens, [CLS] and [SEP] included
    max_batch: int = 32  # the largest batch a TensorRT profile accepts


class BertProcessor(Processor):
    def __init__(self, tokenizer: Tokenizer, labels: tuple[str, ...], limits: InputLimits = DEFAULT_LIMITS) -> None:
        self.tokenizer = tokenizer
        self.labels = labels
        self.max_chars = limits.max_text_chars

    def preprocess(self, item: Any) -> Row:
        return encode_pieces(self.tokenizer, check_text(item, self.max_chars))

    def postprocess(self, row: Row, task: Task) -> Sentiment | Embedding:
        if task == "sentiment":
            return Sentiment.from_logits(row["logits"], self.labels)
        if task == "embed":
            return Embedding(row["embeddings"])
        raise ValueError(f"bert does not serve the task {task!r}")

    def class_labels(self) -> Mapping[str, tuple[str, ...]]:
        return {"logits": self.labels}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsMismatch(f"{path}: not a readable JSON file ({exc})") from None


def _checkpoint_labels(hf: Mapping[str, Any], current: tuple[str, ...]) -> tuple[str, ...]:
    """id2label in id order; transformers' placeholder names (LABEL_0, ...) keep ours."""
    id2label = hf.get("id2label")
    if not id2label:
        count = int(hf.get("num_labels", len(current)))
        return current if count == len(current) else tuple(f"LABEL_{i}" for i in range(count))
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    placeholders = labels == tuple(f"LABEL_{i}" for i in range(len(labels)))
    return current if placeholders and len(labels) == len(current) else labels


@register
class Bert(Plugin[BertConfig]):
    """Sentiment (sequence classification logits) and embeddings (mean pooling) of BERT."""

    name: ClassVar[str] = "bert"
    tasks: ClassVar[tuple[Task, ...]] = ("sentiment", "embed")
    Config: ClassVar[type] = BertConfig
    # bert-base-uncased fine-tuned on SST-2 (its LABEL_0/LABEL_1 are our negative/positive).
    pretrained: ClassVar[str | None] = "hf:textattack/bert-base-uncased-SST-2"
    # 512 ids cover the default local tokenizer's vocabulary (489 tokens).
    test_overrides: ClassVar[Mapping[str, Any]] = dict(
        vocab_size=512,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        intermediate_size=37,
        max_position=128,
        max_tokens=128,
    )

    def resolve_weights(self, named: str) -> WeightsSource:
        """`hf:ORG/NAME[@REVISION]` through huggingface_hub's cache: safetensors when the
        repository has them, else pytorch_model.bin (never both)."""
        if not named.startswith(HF):
            raise ValueError(f"bert takes hf:ORG/NAME[@REVISION] weights or a local folder, not {named!r}")
        folder = hf_snapshot(named, (*HF_PATTERNS, *HF_SAFETENSORS))
        if not any(any(folder.glob(p)) for p in HF_SAFETENSORS):
            folder = hf_snapshot(named, (*HF_PATTERNS, *HF_TORCH_BIN))
        repo = named.removeprefix(HF).partition("@")[0]
        ref = f"{HF}{repo}@{folder.name}"  # the snapshot folder is named for its commit
        return WeightsSource(ref=ref, description=ref, path=folder)

    def config_from_weights(self, config: BertConfig, weights: Path | None) -> BertConfig:
        """Architecture, labels and pad id from the checkpoint's config.json (JSON only)."""
        if weights is None:
            return config
        if not weights.is_dir():
            raise WeightsMismatch(f"{weights}: bert weights are a Hugging Face checkpoint folder, not a file")
        if not (weights / "config.json").is_file():
            raise WeightsMismatch(f"{weights} has no config.json")
        if not any((weights / name).is_file() for name in WEIGHT_FILES):
            raise WeightsMismatch(f"{weights} has none of {', '.join(WEIGHT_FILES)}")
        if not has_checkpoint_tokenizer(weights):
            raise WeightsMismatch(f"{weights} has neither tokenizer.json nor vocab.txt")
        hf = _read_json(weights / "config.json")
        if hf.get("model_type", "bert") != "bert":
            raise WeightsMismatch(f"{weights} holds a {hf['model_type']!r} model, not bert")
        values = {ours: hf[theirs] for ours, theirs in HF_KEYS.items() if hf.get(theirs) is not None}
        values["labels"] = _checkpoint_labels(hf, config.labels)
        values["max_tokens"] = min(config.max_tokens, int(values.get("max_position", config.max_position)))
        return dataclasses.replace(config, **values)

    @property
    def spec(self) -> ExportSpec:
        c = self.config
        axes = (BATCH, SEQUENCE)
        opt = (min(8, c.max_batch), min(128, c.max_tokens))
        return ExportSpec(
            inputs=(
                TensorSpec("input_ids", "int64", axes, pad_value=c.pad_token_id, range=(0, c.vocab_size - 1)),
                TensorSpec("attention_mask", "int64", axes, pad_value=0, range=(0, 1)),  # padding is masked out
                TensorSpec("token_type_ids", "int64", axes, pad_value=0, range=(0, c.type_vocab_size - 1)),
            ),
            outputs=(
                TensorSpec("logits", "float32", (BATCH, len(c.labels))),
                TensorSpec("embeddings", "float32", (BATCH, c.hidden_size)),
            ),
            atol=1e-4,
            rtol=1e-3,
            # torch.export handles transformers 5.23's BERT with SDPA attention and a padded
            # attention mask exactly (checked: |torch - ORT| < 1e-6 for lengths 1..512, batches
            # 1..5 with padding), so the TorchScript exporter is not needed here.
            exporter="dynamo",
            trt_profile={
                name: ShapeRange((1, 1), opt, (c.max_batch, c.max_tokens))
                for name in ("input_ids", "attention_mask", "token_type_ids")
            },
            max_sequence=c.max_tokens,
            # Dynamic int8 (MatMul/Attention): ~2x on VNNI CPUs at 128 tokens.
            int8=Int8Spec("dynamic", min_top1=0.95, min_cosine=0.99, cosine_output="embeddings"),
        )

    def hf_config(self) -> Any:
        """The transformers BertConfig of this plugin's config."""
        import transformers

        c = self.config
        values = {theirs: getattr(c, ours) for ours, theirs in HF_KEYS.items()}
        return transformers.BertConfig(
            **values,
            num_labels=len(c.labels),
            id2label=dict(enumerate(c.labels)),
            label2id={label: i for i, label in enumerate(c.labels)},
            attn_implementation="sdpa",  # the same attention whether random or loaded
        )

    def build(self) -> torch.nn.Module:
        import transformers

        seeded(self.seed)
        if self.weights is None:
            model = transformers.BertForSequenceClassification(self.hf_config())
        else:
            model = _load_checkpoint(self.weights, self.hf_config())
        return _encoder_class()(model).eval()

    def tokenizer(self) -> Tokenizer:
        """The checkpoint's tokenizer, or the default local one."""
        return load_checkpoint_tokenizer(self.weights) if self.weights is not None else default_tokenizer()

    def write_assets(self, dest: Path) -> None:
        tokenizer = self.tokenizer()
        if tokenizer.get_vocab_size() > self.config.vocab_size:  # ids past the embedding table
            raise ValueError(
                f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only {self.config.vocab_size}"
            )
        save_tokenizer(tokenizer, dest / TOKENIZER_FILE)
        write_labels(self.config.labels, dest)

    def processor(self, assets: Path, limits: InputLimits = DEFAULT_LIMITS) -> Processor:
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(assets / TOKENIZER_FILE))
        return BertProcessor(truncating(tokenizer, self.config.max_tokens), read_labels(assets), limits)

    def example_items(self) -> list[Any]:
        return [
            "A wonderful film.",
            "The acting was fine but the story was slow and predictable, and after the first hour I had stopped "
            "caring about any of the characters. The music was lovely, the camera work was beautiful, yet the "
            "ending felt cheap.",
            "Not bad at all: funny, warm and clever.",
        ]


def _load_checkpoint(folder: Path, hf_config: Any) -> Any:
    """from_pretrained, offline, with a WeightsMismatch naming keys that do not fit.

    A checkpoint saved from BertModel lacks the classifier (and maybe the pooler): those are
    initialized from the zoo seed, and a log line says so.
    """
    import torch
    import transformers

    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # our own message below replaces its load report
    transformers.logging.disable_progress_bar()
    try:
        model, info = transformers.BertForSequenceClassification.from_pretrained(
            str(folder),
            config=hf_config,
            local_files_only=True,
            dtype=torch.float32,
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported below, as WeightsMismatch, with the shapes
        )
    except OSError as exc:
        raise WeightsMismatch(f"{folder}: cannot read the checkpoint ({exc})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
    missing = sorted(info["missing_keys"])
    required = [k for k in missing if not k.startswith(OPTIONAL_PREFIXES)]
    misshapen = [f"{k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in sorted(info["mismatched_keys"])]
    problems = [
        f"{label}: {', '.join(keys[:5])}" + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")
        for label, keys in (("missing keys", required), ("shape mismatches", misshapen))
        if keys
    ]
    if problems:
        raise WeightsMismatch(f"{folder} does not fit BertForSequenceClassification: " + "; ".join(problems))
    if missing:
        seeded()
        heads = sorted({k.rsplit(".", 1)[0] for k in missing})
        for name in heads:
            layer = model.get_submodule(name)
            with torch.no_grad():
                layer.weight.normal_(0.0, hf_config.initializer_range)
                layer.bias.zero_()
        log.warning("%s has no %s: initialized from seed 0 (random, not trained)", folder, ", ".join(heads))
    unexpected = sorted(info["unexpected_keys"])
    if unexpected:  # other heads (e.g. BertForPreTraining's cls.*): not part of this model
        log.warning(
            "%s: ignored %d keys this model does not use: %s", folder, len(unexpected), ", ".join(unexpected[:5])
        )
    return model


@cache
def _encoder_class() -> type:
    """The module class, made on first use so that importing this file never imports torch."""
    import torch

    class BertSentimentEmbedder(torch.nn.Module):
        """(input_ids, attention_mask, token_type_ids) -> (logits, mean-pooled embeddings)."""

        def __init__(self, model: Any) -> None:
            super().__init__()
            self.model = model

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> tuple[torch.Tensor, torch.Tensor]:
            # One encoder pass serves both heads: the steps of
            # BertForSequenceClassification.forward, keeping the last hidden state.
            out = self.model.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            logits = self.model.classifier(self.model.dropout(out.pooler_output))
            hidden = out.last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            embeddings = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)
            return logits, embeddings

    return BertSentimentEmbedder
