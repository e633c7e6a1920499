"""Registry conformance, parametrized over every registered plugin (a new plugin is tested here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import zoo
from services.api.tasks import TASKS
from zoo.api import collate, split

MODELS = zoo.list_models()


def small(name: str) -> zoo.Plugin[Any]:
    return zoo.create(name, **zoo.get(name).test_overrides)


def test_the_registry_names_every_builtin_model() -> None:
    assert set(MODELS) >= {"resnet50", "resnet18", "efficientnet_b0", "bert", "lstm_sentiment", "gan_generator"}


def test_duplicate_names_raise() -> None:
    with pytest.raises(ValueError, match="already registered"):
        zoo.register(zoo.get("resnet18"))


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(zoo.UnknownModel) as info:
        zoo.get("resnet51")
    for name in MODELS:
        assert name in str(info.value)


@pytest.mark.parametrize("name", MODELS)
def test_build_forward_matches_the_spec(name: str, tmp_path: Path) -> None:
    import torch

    plugin = small(name)
    spec = plugin.spec
    plugin.write_assets(tmp_path)
    processor = plugin.processor(tmp_path)
    items = plugin.example_items()
    rows = [processor.preprocess(item) for item in items]
    batch = collate(rows, spec)
    for tensor in spec.inputs:
        assert batch[tensor.name].dtype == np.dtype(tensor.dtype)
        fixed = [(i, d) for i, d in enumerate(tensor.shape) if isinstance(d, int)]
        assert all(batch[tensor.name].shape[i] == d for i, d in fixed), (tensor, batch[tensor.name].shape)
    module = plugin.build()
    assert not module.training
    with torch.inference_mode():
        out = module(*(torch.from_numpy(batch[t.name]) for t in spec.inputs))
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(spec.outputs)
    named = {}
    for tensor, value in zip(spec.outputs, out, strict=True):
        assert value.shape[0] == len(items)
        assert tuple(value.shape[1:]) == tuple(d for d in tensor.shape[1:] if isinstance(d, int)), tensor
        named[tensor.name] = value.float().numpy()
    for task in plugin.tasks:  # post-processing gives one typed result per item, the task table's type
        results = [processor.postprocess(row, task) for row in split(named, len(items))]
        assert len(results) == len(items)
        for result in results:
            assert isinstance(result, TASKS[task].result_type), (task, result)
            if isinstance(result, zoo.GeneratedImage):
                assert result.pixels.dtype == np.uint8


@pytest.mark.parametrize("name", MODELS)
def test_random_init_is_deterministic(name: str) -> None:
    first, second = small(name).build().state_dict(), small(name).build().state_dict()
    assert all(np.array_equal(first[k].numpy(), second[k].numpy()) for k in first)


@pytest.mark.parametrize("name", [m for m in MODELS if m in ("resnet18", "efficientnet_b0", "gan_generator")])
def test_weights_file_round_trip(name: str, tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    plugin = small(name)
    module = plugin.build()
    with torch.no_grad():  # weights that differ from the default init
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.01)
    for path in (tmp_path / "w.pth", tmp_path / "w.safetensors"):
        state = {k: v.contiguous() for k, v in module.state_dict().items()}
        torch.save(state, path) if path.suffix == ".pth" else save_file(state, str(path))
        loaded = zoo.create(name, weights=path, **type(plugin).test_overrides).build()
        for key, value in module.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key


def test_a_weights_file_that_does_not_fit_names_the_keys(tmp_path: Path) -> None:
    import torch

    state = zoo.create("resnet18").build().state_dict()  # 1000 classes
    torch.save(state, tmp_path / "r18.pth")
    with pytest.raises(zoo.WeightsMismatch, match=r"fc\.weight: file \(1000, 512\) vs model \(10, 512\)"):
        zoo.create("resnet18", weights=tmp_path / "r18.pth", num_classes=10).build()


def test_serving_side_never_imports_torch(tmp_path: Path) -> None:
    script = f"""
import sys, pathlib, zoo
from zoo.api import collate
for name in zoo.list_models():
    plugin = zoo.create(name, **zoo.get(name).test_overrides)
    assets = pathlib.Path({str(tmp_path)!r}) / name
    assets.mkdir()
    plugin.write_assets(assets)
    processor = plugin.processor(assets)
    collate([processor.preprocess(item) for item in plugin.example_items()], plugin.spec)
import zoo.backends, zoo.artifact, services.runtime.model, services.runtime.hub, services.api.http_app
import services.api.tasks
print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision', 'transformers')))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
