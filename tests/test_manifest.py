"""What you declared is what is served: the serving manifest, as a user runs it.

- `make serve` with a manifest declaring one model from `hf:` (a local hub cache), one imported
  ONNX file, one int8 and one random-init with a seed: each served as declared, /readyz naming
  each source, answers naming model and version, the declared default answering its task.
- An export never changes what another command serves (`latest`), and `make serve`'s
  `--if-missing` never replaces a user's own export.
- Bad manifests are refused, naming the file, the key and the valid choices, by `zoo export
  --manifest` (what `make serve` runs first) and by the server, with nothing in the store changed.
- A misconfiguration stops `bentoml serve` once, exit code 2, instead of a restart loop; plain
  `bentoml serve` listens on loopback only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.config import ConfigError, load_settings
from tests.caches import hf_cache_entry, offline_env, own_gan_weights, tiny_bert_checkpoint, tiny_generator_onnx
from tests.helpers import BIN, ROOT, Server, free_port, http_json, listeners
from zoo import api as zoo_api
from zoo import artifact as store
from zoo import provenance


def zoo_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporters.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def latest(home: Path, name: str) -> str:
    return (home / "models" / name / "latest").read_text().strip()


# -- as declared, through `make serve` ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def declared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    work = tmp_path_factory.mktemp("manifest")
    env = offline_env(work)
    home = Path(env["BENTOML_HOME"])
    home.mkdir()
    source = work / "checkpoint"
    tiny_bert_checkpoint(source)
    hf_cache_entry(env, source, "zooserve-tests/tiny-bert")
    done = zoo_cli(env, "import", "tiny_gan", str(tiny_generator_onnx(work / "generator.onnx")), "--task", "generate")
    assert done.returncode == 0, done.stderr
    manifest = work / "zooserve.yaml"
    manifest.write_text(yaml.safe_dump({"models": {
        "bert": {"weights": "hf:zooserve-tests/tiny-bert"},
        "tiny_gan": {"weights": "imported:generator.onnx"},
        "lstm_sentiment": {"weights": "random-init", "precision": "int8"},
        "gan_generator": {"weights": "random-init:seed=7", "default": True},
    }}))  # fmt: skip
    extra = {k: env[k] for k in ("TORCH_HOME", "HF_HOME", "HF_HUB_CACHE", "ZOOSERVE_OFFLINE", "HF_HUB_OFFLINE")}
    server = Server(
        {**extra, "ZOOSERVE_CONFIG": str(manifest), "ZOOSERVE_HOST": "127.0.0.1", "VENV": str(BIN.parent)},
        home,
        command=["make", "--no-print-directory", "serve", "PORT={port}"],
    )
    try:
        ready = server.wait_ready(timeout=600)
        yield {"server": server, "ready": ready, "home": home, "manifest": manifest, "env": env}
    finally:
        server.stop()


def test_every_model_is_served_from_its_declared_source(declared: dict[str, Any]) -> None:
    models = declared["ready"]["models"]
    assert set(models) == {"bert", "tiny_gan", "lstm_sentiment", "gan_generator"}
    for name, weights in (("bert", "hf:zooserve-tests/tiny-bert"), ("tiny_gan", "imported:generator.onnx"),
                          ("lstm_sentiment", "random-init"), ("gan_generator", "random-init:seed=7")):  # fmt: skip
        assert models[name]["declared"]["weights"] == weights, models[name]
        assert models[name]["declared"]["manifest"] == str(declared["manifest"])
    assert models["bert"]["weights"].startswith("hf:zooserve-tests/tiny-bert@")  # the resolved commit
    assert models["tiny_gan"]["weights"].startswith("imported:generator.onnx sha256:")
    assert models["gan_generator"]["weights"] == "random-init:seed=7"
    assert models["lstm_sentiment"]["precision"] == "int8" and models["lstm_sentiment"]["certificate"]


def test_answers_name_the_declared_model_and_version(declared: dict[str, Any]) -> None:
    url, models = declared["server"].url, declared["ready"]["models"]
    for path, body, model in (
        ("/generate", {"seeds": [1]}, "gan_generator"),  # two generators: the declared default answers
        ("/embed", {"texts": ["hi"]}, "bert"),  # the one embedder
        ("/sentiment", {"texts": ["a fine film"]}, "lstm_sentiment"),  # the zoo's own default of two
        ("/generate", {"seeds": [1], "model": "tiny_gan"}, "tiny_gan"),
    ):
        status, answer = http_json(url + path, body)
        assert status == 200, answer
        assert (answer["model"], answer["model_version"]) == (model, models[model]["version"]), path
    status, meta = http_json(f"{url}/v2/models/bert")
    assert meta["parameters"]["declared_weights"] == "hf:zooserve-tests/tiny-bert"


def test_make_serve_exported_the_declared_artifacts_and_moved_no_latest(declared: dict[str, Any]) -> None:
    home, models = declared["home"], declared["ready"]["models"]
    version = models["gan_generator"]["version"]
    meta = json.loads((home / "models" / "gan-generator-onnx" / version / store.META_FILE).read_text())
    assert meta["weights_ref"] == "random-init:seed=7" and meta["weights_declared"] == "random-init:seed=7"
    done = zoo_cli(declared["env"], "export", "--manifest", str(declared["manifest"]))
    assert done.returncode == 0 and done.stdout.count(" present ") == 4, done.stdout + done.stderr


# -- no side effects -------------------------------------------------------------------------------------------
def test_exports_never_replace_a_users_own(tmp_path: Path) -> None:
    env = {**os.environ, "BENTOML_HOME": str(tmp_path / "home")}
    mine = own_gan_weights(tmp_path / "mine.pth", seed=1)
    done = zoo_cli(env, "export", "gan_generator", "--weights", str(mine))
    assert done.returncode == 0, done.stderr
    own = latest(tmp_path / "home", "gan-generator-onnx")
    done = zoo_cli(env, "export", "gan_generator", "--precision", "int8")  # its fp32 default is made too ...
    assert done.returncode == 0, done.stderr
    assert len(store_versions(tmp_path / "home", "gan-generator-onnx")) == 2
    assert latest(tmp_path / "home", "gan-generator-onnx") == own  # ... and is not `latest`
    done = zoo_cli(env, "export", "gan_generator", "--if-missing")  # what `make serve` runs, per model
    assert f"gan-generator-onnx:{own} present" in done.stdout, done.stdout + done.stderr
    assert latest(tmp_path / "home", "gan-generator-onnx") == own
    written = zoo_cli(env, "manifest")  # a manifest of what the store holds serves the user's export
    assert yaml.safe_load(written.stdout)["models"]["gan_generator"] == {"weights": f"file:{mine}"}
    (tmp_path / "m.yaml").write_text(written.stdout)
    settings = load_settings({**env, "ZOOSERVE_CONFIG": str(tmp_path / "m.yaml"), "ZOOSERVE_MODELS": "gan_generator"})
    assert settings.for_model("gan_generator").weights == f"file:{mine}"


def store_versions(home: Path, name: str) -> list[str]:
    return sorted(p.name for p in (home / "models" / name).iterdir() if p.is_dir())


# -- bad manifests ---------------------------------------------------------------------------------------------
BAD = [
    ({"models": {"resnet51": {}}}, "models.resnet51: unknown model 'resnet51'; known models: bert, "),
    ({"models": {"bert": {"weights": "hf2:org/name"}}}, "models.bert: weights: 'hf2:org/name' is not a weights "
     "source; use random-init[:seed=N], plugin, torchvision:MEMBER, hf:ORG/NAME[@REVISION], file:PATH or imported:"),
    ({"models": {"bert": {"precision": "int8", "backend": "torch"}}},
     "models.bert: precision int8 runs on onnxruntime on cpu only, not torch on cpu"),
    ({"models": {"bert": {"precision": "int4"}}}, "precision 'int4'; choose one of fp32, int8, fp16"),
    ({"models": {"bert": {"max_batch_sise": 8}}}, "models.bert: unknown key 'max_batch_sise'; valid keys: weights,"),
    ({"model": {"bert": {}}}, "model: unknown key; valid keys: models, defaults, limits"),
    ({"models": {"bert": {"default": True}, "lstm_sentiment": {"default": True}}},
     "models.lstm_sentiment.default: bert is /sentiment's default already"),
    ({"defaults": {"weights": "random-init"}}, "defaults.weights: set it per model"),
]  # fmt: skip


def test_a_weights_file_is_hashed_once_while_it_is_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Selecting the version that holds `file:` weights compares the file's sha256 with each stored
    version's: hashed once, not once per version and per load, and again when the file changes."""
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"first")
    hashed: list[Path] = []
    monkeypatch.setattr(provenance, "hash_path", lambda path: hashed.append(path) or zoo_api.hash_path(path))
    declared = provenance.parse(f"file:{weights}")
    stored = {"weights": "sha256:" + zoo_api.hash_path(weights)}
    assert all(declared.matches(stored) for _ in range(5)) and len(hashed) == 1
    weights.write_bytes(b"second, longer")
    assert not declared.matches(stored) and len(hashed) == 2


def test_a_variable_wins_over_defaults_and_a_models_own_key_over_both(tmp_path: Path) -> None:
    path = tmp_path / "zooserve.yaml"
    models = {"gan_generator": {}, "lstm_sentiment": {"precision": "int8"}}
    path.write_text(yaml.safe_dump({"defaults": {"precision": "int8"}, "models": models}))
    env = {"ZOOSERVE_CONFIG": str(path)}
    precisions = {name: knobs.precision for name, knobs in load_settings(env).batching.items()}
    assert precisions == {"gan_generator": "int8", "lstm_sentiment": "int8"}
    precisions = {n: k.precision for n, k in load_settings({**env, "ZOOSERVE_PRECISION": "fp32"}).batching.items()}
    assert precisions == {"gan_generator": "fp32", "lstm_sentiment": "int8"}


@pytest.mark.parametrize(("manifest", "message"), BAD)
def test_a_bad_manifest_is_refused_naming_file_key_and_choices(
    tmp_path: Path, manifest: dict[str, Any], message: str
) -> None:
    path = tmp_path / "zooserve.yaml"
    path.write_text(yaml.safe_dump(manifest))
    with pytest.raises(ConfigError) as refused:
        load_settings({"ZOOSERVE_CONFIG": str(path)})
    assert str(refused.value).startswith(f"ZOOSERVE_CONFIG={path}: ") and message in str(refused.value)


def test_make_serve_refuses_a_bad_manifest_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {**os.environ, "BENTOML_HOME": str(home)}
    assert zoo_cli(env, "export", "gan_generator").returncode == 0
    before = store_versions(home, "gan-generator-onnx"), latest(home, "gan-generator-onnx")
    path = tmp_path / "zooserve.yaml"
    path.write_text(yaml.safe_dump({"models": {"gan_generator": {"weights": "random-init:seed=x"}}}))
    done = zoo_cli(env, "export", "--manifest", str(path))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"ZOOSERVE_CONFIG={path}: models.gan_generator: weights: 'random-init:seed=x'" in done.stderr
    assert (store_versions(home, "gan-generator-onnx"), latest(home, "gan-generator-onnx")) == before


# -- starting: once, and on loopback ----------------------------------------------------------------------------
def bentoml_serve(models: Path, env: dict[str, str], *host: str) -> subprocess.CompletedProcess[str]:
    home = models.parent / f"refused-{free_port()}"  # a home of its own over the store's models
    home.mkdir()
    (home / "models").symlink_to(models)
    command = [str(BIN / "bentoml"), "serve", *host, "--port", str(free_port())]
    full = {**os.environ, "BENTOML_HOME": str(home), "ZOOSERVE_GRPC_PORT": str(free_port()), **env}
    return subprocess.run(command, cwd=ROOT, env=full, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("env", "host", "message"),
    [
        ({"ZOOSERVE_REPOSITORY_API": "1"}, ("--host", "0.0.0.0"), "non-loopback address (0.0.0.0) needs "
         "ZOOSERVE_ADMIN_TOKEN"),
        ({"ZOOSERVE_MODELS": "efficientnet_b0", "ZOOSERVE_PRECISION": "int8"}, (), "efficientnet-b0-onnx-int8:latest "
         "is not in the BentoML model store; run `zoo export efficientnet_b0 --precision int8`"),
        ({"ZOOSERVE_MODELS": "gan_generator,no_such_model"}, (), "ZOOSERVE_MODELS: unknown model 'no_such_model'"),
    ],
)  # fmt: skip
def test_a_misconfiguration_stops_the_server_once(
    small_store: Path, env: dict[str, str], host: tuple[str, ...], message: str
) -> None:
    started = time.monotonic()
    done = bentoml_serve(small_store / "models", {"ZOOSERVE_MODELS": "gan_generator", **env}, *host)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.count("zooserve cannot start:") == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and time.monotonic() - started < 60


def test_plain_bentoml_serve_listens_on_loopback_only(small_store: Path) -> None:
    # no ZOOSERVE_GRPC_HOST: gRPC follows the HTTP host, as in a plain `bentoml serve`
    server = Server({"ZOOSERVE_MODELS": "gan_generator", "ZOOSERVE_GRPC_HOST": ""}, small_store,
                    command=[str(BIN / "bentoml"), "serve", "--port", "{port}"])  # fmt: skip
    try:
        server.wait_ready()
        assert listeners(server.port) == ["127.0.0.1"]
        assert listeners(server.grpc_port) == ["127.0.0.1"]  # gRPC follows the HTTP host
        assert http_json(f"{server.url}/readyz")[1]["ready"] is True
    finally:
        server.stop()


def test_an_http_port_in_use_stops_the_server_once(small_store: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        home = small_store.parent / f"taken-{port}"
        home.mkdir()
        (home / "models").symlink_to(small_store / "models")
        done = subprocess.run(
            [str(BIN / "bentoml"), "serve", "--port", str(port)], cwd=ROOT, capture_output=True, text=True,
            timeout=120, env={**os.environ, "BENTOML_HOME": str(home), "ZOOSERVE_MODELS": "gan_generator"},
        )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"HTTP port 127.0.0.1:{port} is already in use by another process" in done.stderr
