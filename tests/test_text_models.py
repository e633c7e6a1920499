"""The text plugins: local tokenizers, truncation, bad input, padding invariance (torch and ONNX),
offline Hugging Face BERT checkpoints, LSTM checkpoint folders and weights that do not fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zoo
from zoo.api import BadInput, collate, split
from zoo.models.lstm_sentiment import save_checkpoint
from zoo.text import default_tokenizer, default_wordpiece_vocab, save_tokenizer

TEXT_MODELS = ("bert", "lstm_sentiment")


def small(name: str, **overrides: Any) -> zoo.Plugin[Any]:
    return zoo.create(name, **{**zoo.get(name).test_overrides, **overrides})


def processor_of(plugin: zoo.Plugin[Any], assets: Path) -> zoo.Processor:
    assets.mkdir(parents=True, exist_ok=True)
    plugin.write_assets(assets)
    return plugin.processor(assets)


def run_torch(module: Any, batch: dict[str, np.ndarray], plugin: zoo.Plugin[Any]) -> list[np.ndarray]:
    import torch

    with torch.inference_mode():
        out = module(*(torch.from_numpy(batch[t.name]) for t in plugin.spec.inputs))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


# -- tokenizers, truncation, bad input -------------------------------------------------------------
def test_default_tokenizer_is_deterministic_and_bert_shaped(tmp_path: Path) -> None:
    save_tokenizer(default_tokenizer(), tmp_path / "a.json")
    save_tokenizer(default_tokenizer(), tmp_path / "b.json")
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    for folder in (tmp_path / "x", tmp_path / "y"):  # two exports write the same asset
        folder.mkdir()
        small("bert").write_assets(folder)
    assert (tmp_path / "x/tokenizer.json").read_bytes() == (tmp_path / "y/tokenizer.json").read_bytes()
    vocab = default_tokenizer().get_vocab()
    assert [vocab[t] for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]
    assert len(vocab) == len(default_wordpiece_vocab()) <= small("bert").config.vocab_size
    encoding = default_tokenizer().encode("A GREAT movie!")
    assert encoding.tokens == ["[CLS]", "a", "great", "movie", "!", "[SEP]"]


def test_truncation_to_max_tokens(tmp_path: Path) -> None:
    bert = processor_of(small("bert", max_tokens=16), tmp_path / "bert")
    long = "good " * 20_000  # long enough for the leading-words shortcut of the tokenizer
    ids = bert.preprocess(long)["input_ids"]
    assert ids.tolist() == [2] + [default_tokenizer().token_to_id("good")] * 14 + [3]  # [CLS] ... [SEP]
    reference = default_tokenizer()
    reference.enable_truncation(max_length=16)
    messy = "fine,\x00\x00 " * 40 + "ok " * 3000  # control characters the normalizer drops
    assert bert.preprocess(messy)["input_ids"].tolist() == reference.encode(messy).ids
    assert len(bert.preprocess("a short one")["input_ids"]) == 5
    lstm = processor_of(small("lstm_sentiment", max_tokens=10), tmp_path / "lstm")
    words = lstm.preprocess("great " * 50 + "awful")["input_ids"]
    assert words.shape == (10,) and len(set(words.tolist())) == 1 and words[0] > 1


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_bad_texts_are_refused_and_empty_text_has_a_token(name: str, tmp_path: Path) -> None:
    processor = processor_of(small(name), tmp_path)
    with pytest.raises(BadInput, match="string, not int"):
        processor.preprocess(12)
    with pytest.raises(BadInput, match="string, not bytes"):
        processor.preprocess(b"good")
    with pytest.raises(BadInput, match="100001 characters exceeds the limit of 100000"):
        processor.preprocess("x" * 100_001)
    assert processor.preprocess("x" * 100_000)["input_ids"].ndim == 1
    for text in ("", "   \n"):
        row = processor.preprocess(text)
        assert len(row["input_ids"]) >= 1 and row["input_ids"].dtype == np.int64
        assert row["input_ids"].min() > 0  # never the padding id
    result = processor.postprocess({"logits": np.array([0.0, 2.0]), "embeddings": np.zeros(32)}, "sentiment")
    assert result.label == "positive" and abs(result.probabilities.sum() - 1) < 1e-9


# -- padding invariance, in torch and in ONNX Runtime ----------------------------------------------
def _alone_and_padded(plugin: zoo.Plugin[Any], processor: zoo.Processor) -> tuple[dict, dict]:
    short, long = (processor.preprocess(t) for t in plugin.example_items()[:2])
    alone, padded = collate([short], plugin.spec), collate([short, long], plugin.spec)
    assert padded["input_ids"].shape[1] > alone["input_ids"].shape[1] and padded["input_ids"][0, -1] == 0
    return alone, padded


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_never_changes_a_result_in_torch_and_onnx(name: str, tmp_path: Path) -> None:
    from exporters.onnx import export_onnx
    from zoo.backends.onnxruntime import OrtRunner

    plugin = small(name)
    report = export_onnx(plugin, tmp_path, progress=lambda _: None)  # raises past the spec's tolerance
    assert report.max_abs <= plugin.spec.atol and len(report.cases) >= 3
    alone, padded = _alone_and_padded(plugin, plugin.processor(tmp_path))
    module = plugin.build()
    torch_alone, torch_padded = run_torch(module, alone, plugin), run_torch(module, padded, plugin)
    ort = OrtRunner(tmp_path / "model.onnx", threads=2)
    ort_alone, ort_padded = ort.run(alone), ort.run(padded)
    for i, name_ in enumerate(plugin.spec.output_names):
        np.testing.assert_allclose(torch_padded[i][0], torch_alone[i][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ort_padded[name_][0], ort_alone[name_][0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(ort_alone[name_][0], torch_alone[i][0], rtol=0, atol=1e-5)
    assert not np.allclose(torch_padded[0][0], torch_padded[0][1])  # two texts, two results


# -- Hugging Face BERT checkpoints, offline ---------------------------------------------------------
def _tiny_hf_config(**extra: Any) -> Any:
    import transformers

    sizes = {"hidden_size": 48, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 40}
    return transformers.BertConfig(vocab_size=len(default_wordpiece_vocab()), **sizes, **extra)


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.stack([h[m.astype(bool)].mean(axis=0) for h, m in zip(hidden, mask, strict=True)])


def test_a_hugging_face_bert_checkpoint_loads_offline_and_matches_transformers(tmp_path: Path) -> None:
    import torch
    import transformers

    torch.manual_seed(123)
    labels = {0: "bad", 1: "neutral", 2: "good"}
    reference = transformers.BertForSequenceClassification(_tiny_hf_config(id2label=labels)).eval()
    reference.save_pretrained(tmp_path / "ckpt")
    save_tokenizer(default_tokenizer(), tmp_path / "ckpt/tokenizer.json")

    plugin = zoo.create("bert", weights=tmp_path / "ckpt")
    c = plugin.config
    assert (c.hidden_size, c.num_layers, c.num_heads, c.intermediate_size) == (48, 3, 4, 40)
    assert c.labels == ("bad", "neutral", "good") and c.vocab_size == len(default_wordpiece_vocab())
    assert plugin.spec.output("logits").shape == ("batch", 3)
    assert plugin.spec.output("embeddings").shape == ("batch", 48)
    processor = processor_of(plugin, tmp_path / "assets")
    batch = collate([processor.preprocess(t) for t in plugin.example_items()], plugin.spec)
    logits, embeddings = run_torch(plugin.build(), batch, plugin)
    feeds = {k: torch.from_numpy(v) for k, v in batch.items()}
    with torch.inference_mode():
        want_logits = reference(**feeds).logits.numpy()
        hidden = reference.bert(**feeds).last_hidden_state.numpy()
    assert np.array_equal(logits, want_logits)
    np.testing.assert_allclose(embeddings, _mean_pool(hidden, batch["attention_mask"]), rtol=0, atol=1e-6)
    results = [processor.postprocess(row, "sentiment") for row in split({"logits": logits}, 3)]
    assert [r.label for r in results] == [labels[int(i)] for i in want_logits.argmax(axis=1)]


def test_a_bare_bert_model_with_vocab_txt_gets_a_seeded_classifier(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import torch
    import transformers

    torch.manual_seed(7)
    encoder = transformers.BertModel(_tiny_hf_config()).eval()
    encoder.save_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt/vocab.txt").write_text("\n".join(default_wordpiece_vocab()) + "\n")
    (tmp_path / "ckpt/tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))

    plugin = zoo.create("bert", weights=tmp_path / "ckpt")
    assert plugin.config.labels == ("negative", "positive")  # placeholder LABEL_i keep our names
    processor = processor_of(plugin, tmp_path / "assets")
    texts = plugin.example_items()
    assert [processor.preprocess(t)["input_ids"].tolist() for t in texts] == [
        default_tokenizer().encode(t).ids for t in texts
    ]
    batch = collate([processor.preprocess(t) for t in texts], plugin.spec)
    with caplog.at_level(logging.WARNING, logger="zoo.models.bert"):
        first = run_torch(plugin.build(), batch, plugin)
    assert "classifier" in caplog.text and "seed 0" in caplog.text
    second = run_torch(plugin.build(), batch, plugin)
    assert np.array_equal(first[0], second[0])  # the missing head is initialized deterministically
    with torch.inference_mode():
        hidden = encoder(**{k: torch.from_numpy(v) for k, v in batch.items()}).last_hidden_state.numpy()
    np.testing.assert_allclose(first[1], _mean_pool(hidden, batch["attention_mask"]), rtol=0, atol=1e-6)


# -- LSTM checkpoint folders, and weights that do not fit ---------------------------------------------
VOCAB = {"<pad>": 0, "<unk>": 1, "great": 2, "awful": 3, "movie": 4, "a": 5, "!": 6}
SIZES = {"vocab_size": 40, "embed_dim": 8, "hidden": 12, "labels": ("neg", "mixed", "pos"), "max_tokens": 32}


@pytest.mark.parametrize("weights_name", ["model.safetensors", "model.pth"])
def test_lstm_checkpoint_folder_round_trip(weights_name: str, tmp_path: Path) -> None:
    import torch

    trained = zoo.create("lstm_sentiment", **SIZES)
    module = trained.build()
    with torch.no_grad():  # weights that differ from the seeded init
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    folder = save_checkpoint(module, VOCAB, trained.config, tmp_path / "ckpt")
    if weights_name == "model.pth":
        (folder / "model.safetensors").unlink()
        torch.save(module.state_dict(), folder / "model.pth")

    loaded = zoo.create("lstm_sentiment", weights=folder)  # default config, completed from config.json
    assert loaded.config == trained.config and loaded.spec.output("logits").shape == ("batch", 3)
    processor = processor_of(loaded, tmp_path / "assets")
    assert processor.preprocess("A GREAT movie! unseen")["input_ids"].tolist() == [5, 2, 4, 6, 1]
    batch = collate([processor.preprocess(t) for t in ("great movie", "an awful, awful movie !")], loaded.spec)
    rebuilt = loaded.build()
    for key, value in module.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    assert np.array_equal(run_torch(rebuilt, batch, loaded)[0], run_torch(module.eval(), batch, loaded)[0])
    result = processor.postprocess({"logits": run_torch(rebuilt, batch, loaded)[0][0]}, "sentiment")
    assert set(result.labels) == {"neg", "mixed", "pos"}


def test_an_lstm_folder_that_does_not_fit_names_the_shapes(tmp_path: Path) -> None:
    module = zoo.create("lstm_sentiment", **{**SIZES, "hidden": 8}).build()
    folder = save_checkpoint(module, VOCAB, SIZES, tmp_path / "ckpt")  # config.json says hidden 12
    plugin = zoo.create("lstm_sentiment", weights=folder)
    shapes = r"fc\.weight: file \(3, 16\) vs model \(3, 24\).*lstm\.bias_hh_l0: file \(32,\) vs model \(48,\)"
    with pytest.raises(zoo.WeightsMismatch, match=shapes):
        plugin.build()
    (folder / "vocab.json").write_text(json.dumps({**VOCAB, "huge": 40}))
    with pytest.raises(zoo.WeightsMismatch, match=r"every id must be an integer in 0\.\.39"):
        zoo.create("lstm_sentiment", weights=folder)
    with pytest.raises(zoo.WeightsMismatch, match="weights are a folder"):
        zoo.create("lstm_sentiment", weights=folder / "model.safetensors")


def test_a_bert_checkpoint_that_does_not_fit_names_the_shapes(tmp_path: Path) -> None:
    import transformers

    transformers.BertForSequenceClassification(_tiny_hf_config()).save_pretrained(tmp_path / "ckpt")
    save_tokenizer(default_tokenizer(), tmp_path / "ckpt/tokenizer.json")
    config = json.loads((tmp_path / "ckpt/config.json").read_text())
    (tmp_path / "ckpt/config.json").write_text(json.dumps({**config, "intermediate_size": 64}))
    plugin = zoo.create("bert", weights=tmp_path / "ckpt")
    with pytest.raises(zoo.WeightsMismatch, match=r"intermediate\.dense\.weight: file \(40, 48\) vs model \(64, 48\)"):
        plugin.build()
    (tmp_path / "ckpt/tokenizer.json").unlink()
    with pytest.raises(zoo.WeightsMismatch, match="neither tokenizer.json nor vocab.txt"):
        zoo.create("bert", weights=tmp_path / "ckpt")
