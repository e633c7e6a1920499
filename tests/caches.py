"""Weights a user brings: caches filled from local files, in each cache's own layout, so that the
real download code paths run without a network (torch.hub's checkpoints folder, the Hugging Face
hub cache), and weights files of their own.

Nothing is ever downloaded: `offline_env` also sets ZOOSERVE_OFFLINE=1 and HF_HUB_OFFLINE=1.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

COMMIT = hashlib.sha1(b"tiny-bert").hexdigest()  # a snapshot folder is named for a 40-hex commit


def offline_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TORCH_HOME": str(tmp_path / "torch"),
        "HF_HOME": str(tmp_path / "hf"),
        "HF_HUB_CACHE": str(tmp_path / "hf" / "hub"),
        "BENTOML_HOME": str(tmp_path / "bentoml"),
        "ZOOSERVE_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }


def hf_cache_entry(env: dict[str, str], source: Path, repo: str) -> Path:
    """`source`'s files as huggingface_hub stores a download: blobs by hash, snapshot links, refs/main."""
    root = Path(env["HF_HUB_CACHE"]) / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / COMMIT
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in sorted(source.iterdir()):
        data = file.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snapshot


def tiny_bert_checkpoint(folder: Path) -> None:
    """A small real BERT checkpoint with labels and a tokenizer, saved by transformers itself."""
    import torch
    import transformers

    from zoo.text import default_tokenizer

    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=default_tokenizer(),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )  # fmt: skip
    config = transformers.BertConfig(
        vocab_size=512,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        id2label={0: "gloomy", 1: "sunny"},
        label2id={"gloomy": 0, "sunny": 1},
    )
    torch.manual_seed(5)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def own_gan_weights(path: Path, seed: int) -> Path:
    """A trained-looking GAN generator state dict of the default architecture."""
    import torch

    import zoo

    module = zoo.create("gan_generator").build()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.01)
    torch.save(module.state_dict(), path)
    return path


def tiny_generator_onnx(path: Path) -> Path:
    """An ONNX generator from elsewhere: 8 latent numbers to a 4x4 image."""
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Generator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(8, 16)

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.fc(z)).view(-1, 1, 4, 4)

    torch.onnx.export(
        Generator(), (torch.randn(2, 8),), str(path), input_names=["z"], output_names=["picture"],
        dynamic_axes={"z": {0: "batch"}, "picture": {0: "batch"}}, opset_version=18, dynamo=False,
    )  # fmt: skip
    return path
