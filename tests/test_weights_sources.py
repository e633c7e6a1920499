"""Named pretrained weights (`torchvision:MEMBER`, `hf:ORG/NAME[@REV]`) through their real caches.

Nothing is ever downloaded: each test fills the cache in that cache's own layout from local
files (torch.hub's $TORCH_HOME/hub/checkpoints/<the URL's basename>; the Hugging Face hub's
models--org--name/{blobs,refs,snapshots}), sets ZOOSERVE_OFFLINE=1 and HF_HUB_OFFLINE=1, and
runs the real `zoo` command, whose code path is the one that downloads when a network exists.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from torchvision.models import ResNet18_Weights

from tests.caches import COMMIT, hf_cache_entry, offline_env, tiny_bert_checkpoint
from tests.helpers import ROOT
from zoo import artifact as store


def zoo_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporters.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def stored(env: dict[str, str], name: str) -> store.Artifact:
    """The latest artifact `name` of the store at env's BENTOML_HOME (read with the store's layout)."""
    models = Path(env["BENTOML_HOME"]) / "models" / name
    version = (models / "latest").read_text().strip()
    meta = json.loads((models / version / store.META_FILE).read_text())
    return store.Artifact(f"{name}:{version}", models / version, meta)


def torch_hub_file(env: dict[str, str], architecture: str, member: str, seed: int = 0) -> Path:
    """A real state dict of `architecture` under the exact name torchvision's URL gives it."""
    import torch
    import torchvision
    from torchvision.models import get_model_weights

    weights = get_model_weights(architecture)[member]
    target = Path(env["TORCH_HOME"]) / "hub" / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    module = getattr(torchvision.models, architecture)(weights=None).eval()
    torch.save(module.state_dict(), target)
    return target


def test_torchvision_default_weights_export_with_their_preset_and_labels(tmp_path: Path) -> None:
    import onnxruntime
    import torch
    import torchvision
    from torchvision.models import ResNet18_Weights

    env = offline_env(tmp_path)
    file = torch_hub_file(env, "resnet18", "IMAGENET1K_V1", seed=3)
    done = zoo_cli(env, "export", "resnet18", "--weights", "torchvision:DEFAULT")
    assert done.returncode == 0, done.stderr
    exported = stored(env, "resnet18-onnx")
    assert exported.metadata["weights_source"] == "torchvision:ResNet18_Weights.IMAGENET1K_V1"
    preset = ResNet18_Weights.IMAGENET1K_V1.transforms()
    config = exported.config
    assert (config["resize"], config["crop"]) == (preset.resize_size[0], preset.crop_size[0]) == (256, 224)
    assert config["mean"] == list(preset.mean) and config["interpolation"] == "bilinear"
    labels = json.loads((exported.path / "labels.json").read_text())
    assert labels == ResNet18_Weights.IMAGENET1K_V1.meta["categories"] and labels[281] == "tabby"
    # the served graph holds the cached file's weights, not a random init
    reference = torchvision.models.resnet18()
    reference.load_state_dict(torch.load(file, weights_only=True))
    pixels = np.random.default_rng(0).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        want = reference.eval()(torch.from_numpy(pixels)).numpy()
    session = onnxruntime.InferenceSession(str(exported.runnable), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixel_values": pixels})[0]
    np.testing.assert_allclose(got, want, atol=1e-3, rtol=1e-3)
    # another name of the same weights is the same artifact
    again = zoo_cli(env, "export", "resnet18", "--weights", "torchvision:IMAGENET1K_V1")
    assert again.returncode == 0 and "present" in again.stdout and exported.tag in again.stdout


def test_resnet50_v1_resizes_to_256_while_v2_is_232(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    torch_hub_file(env, "resnet50", "IMAGENET1K_V1")
    done = zoo_cli(env, "info", "resnet50", "--weights", "torchvision:IMAGENET1K_V1")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["config"]["resize"] == 256 and info["weights"] == "torchvision:ResNet50_Weights.IMAGENET1K_V1"
    default = json.loads(zoo_cli(env, "info", "resnet50").stdout)
    assert default["config"]["resize"] == 232 and default["weights"] == "random-init:seed=0"
    assert default["pretrained"] == "torchvision:DEFAULT"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["resnet50", "--weights", "torchvision:IMAGENET1K_V3"], "valid: torchvision:IMAGENET1K_V1, "),
        (["resnet18", "--weights", "torchvision:DEFAULT"], "is not in torch.hub's cache"),
        (["bert", "--weights", "hf:nobody/absent-model"], "is not in the Hugging Face cache"),
        (["bert", "--weights", "hf:no-slash"], "hf:ORG/NAME[@REVISION]"),
        (["gan_generator", "--weights", "torchvision:DEFAULT"], "takes a local weights path"),
        # make serve WEIGHTS=pretrained: bert (first) asks its cache for the named checkpoint
        (["--all", "--pretrained"], "hf:textattack/bert-base-uncased-SST-2 is not in the Hugging Face cache"),
        (["resnet18", "--pretrained", "--weights", "x.pth"], "give --weights or --pretrained, not both"),
    ],
)
def test_unknown_or_uncached_names_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    done = zoo_cli(offline_env(tmp_path), "export", *args)
    assert done.returncode != 0 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_hf_checkpoint_from_the_hub_cache(tmp_path: Path) -> None:
    env = offline_env(tmp_path)
    source = tmp_path / "checkpoint"
    tiny_bert_checkpoint(source)
    snapshot = hf_cache_entry(env, source, "zooserve-tests/tiny-bert")
    for weights in ("hf:zooserve-tests/tiny-bert", f"hf:zooserve-tests/tiny-bert@{COMMIT}"):
        done = zoo_cli(env, "export", "bert", "--weights", weights)
        assert done.returncode == 0, done.stderr
    exported = stored(env, "bert-onnx")
    assert exported.metadata["weights_source"] == f"hf:zooserve-tests/tiny-bert@{COMMIT}"
    assert json.loads((exported.path / "labels.json").read_text()) == ["gloomy", "sunny"]  # id2label
    assert exported.config["hidden_size"] == 32 and exported.config["max_tokens"] == 64
    assert exported.metadata["parity"]["max_abs"] <= 1e-4
    # the weights are the snapshot's (its content hash), and both names found one artifact
    assert exported.metadata["weights"] == "sha256:" + __import__("zoo").api.hash_path(snapshot)
    assert len(list((Path(env["BENTOML_HOME"]) / "models" / "bert-onnx").iterdir())) == 2  # version + latest


# Loaded first by the CLI's interpreter (sitecustomize): a connection or a name lookup for anything
# but loopback raises, so a download path that ignored the proxy could still not leave the machine.
LOOPBACK_ONLY = """
import socket
_LOCAL = ("127.0.0.1", "localhost", "::1")
_connect, _lookup = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    if isinstance(address, tuple) and address[0] not in _LOCAL:
        raise OSError(f"test guard: no connection to {address[0]} from this test")
    return _connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL and host is not None:
        raise OSError(f"test guard: no name lookup of {host} from this test")
    return _lookup(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""


def test_a_failed_download_names_the_source_and_the_offline_switch(tmp_path: Path) -> None:
    """No network (a refused loopback proxy and hub, and a guard refusing anything but loopback,
    so nothing leaves the machine), no offline switch: one line naming what was fetched and the
    switch; never a raw URLError."""
    env = {k: v for k, v in offline_env(tmp_path).items() if k not in ("ZOOSERVE_OFFLINE", "HF_HUB_OFFLINE")}
    guard = tmp_path / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(LOOPBACK_ONLY)
    env.update(https_proxy="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="",
               HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=f"{guard}:{ROOT}")  # fmt: skip
    done = zoo_cli(env, "export", "resnet18", "--weights", "torchvision:DEFAULT")
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    # the URL torchvision itself would fetch, read from its weights enum (no address written here)
    assert f"downloading {ResNet18_Weights.DEFAULT.url} failed" in done.stderr
    assert "ZOOSERVE_OFFLINE=1" in done.stderr and "URLError" not in done.stderr
    done = zoo_cli(env, "export", "bert", "--weights", "hf:nobody/absent-model")
    assert done.returncode == 1 and "downloading from the Hugging Face hub failed" in done.stderr, done.stderr
    assert "downloads are off" not in done.stderr  # no switch is set: the message says so
    done = zoo_cli({**env, "HF_HUB_OFFLINE": "1"}, "export", "bert", "--weights", "hf:nobody/absent-model")
    assert "downloads are off (HF_HUB_OFFLINE=1)" in done.stderr, done.stderr
