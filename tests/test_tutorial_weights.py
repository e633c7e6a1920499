"""The tutorials' own trained files: the Keras GAN generator (.h5 and .keras) and a state dict of the
tutorial's PyTorch BiLSTM with its vocabulary, exported with `zoo export --weights` and served by
a real `bentoml serve`; the served outputs equal Keras' own `predict` and the module's own forward.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as thttp

from tests.helpers import ROOT, Server, http_json, running_server
from zoo.results import softmax

os.environ.setdefault("KERAS_BACKEND", "torch")  # Keras 3 on its torch backend: no TensorFlow

LATENTS = np.random.default_rng(7).standard_normal((5, 100)).astype(np.float32)
VOCAB = {
    "<pad>": 0,
    "<unk>": 1,
    **{w: i + 2 for i, w in enumerate("a great awful movie film plot not bad at all".split())},
}
LSTM_CONFIG = {"vocab_size": 30, "embed_dim": 16, "hidden": 24, "labels": ["negative", "positive"], "max_tokens": 64}
TEXTS = ["a great movie", "not bad at all", "awful plot", "a film with an unknown word"]


def zoo_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENTOML_HOME": str(home), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "exporters.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True
    )


def keras_generator(units: tuple[int, ...] = (256, 512, 1024), slope: float = 0.2, momentum: float = 0.8) -> Any:
    """The seed tutorial's generator, in Keras 3, with BatchNorm statistics that are not the defaults."""
    import keras
    from keras import layers

    keras.backend.clear_session()  # layer names from dense, dense_1, ... again, as in a fresh script
    keras.utils.set_random_seed(0)
    stack: list[Any] = [keras.Input((100,))]
    for width in units:
        stack += [
            layers.Dense(width),
            layers.LeakyReLU(negative_slope=slope),
            layers.BatchNormalization(momentum=momentum),
        ]
    stack += [layers.Dense(28 * 28, activation="tanh"), layers.Reshape((28, 28, 1))]
    model = keras.Sequential(stack)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, n), rng.normal(0, 0.2, n), rng.normal(0, 0.2, n), rng.uniform(0.5, 2, n)]
            )
    return model


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("keras")
    model = keras_generator()
    model.save(folder / "generator.h5")
    model.save(folder / "generator.keras")
    return folder, np.asarray(model.predict(LATENTS, verbose=0))


@pytest.fixture(scope="module")
def tutorial_lstm(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """A checkpoint folder saved from an independently written tutorial-style module."""
    import torch
    from torch import nn

    class TutorialLSTM(nn.Module):  # Embedding, bidirectional LSTM, Linear: the tutorial's module
        def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int, output_dim: int) -> None:
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim, bidirectional=True, batch_first=True)
            self.fc = nn.Linear(hidden_dim * 2, output_dim)

        def forward(self, text: torch.Tensor) -> torch.Tensor:
            _, (hidden, _) = self.lstm(self.embedding(text))
            return self.fc(torch.cat((hidden[-2], hidden[-1]), dim=1))

    torch.manual_seed(3)
    module = TutorialLSTM(LSTM_CONFIG["vocab_size"], LSTM_CONFIG["embed_dim"], LSTM_CONFIG["hidden"], 2).eval()
    folder = tmp_path_factory.mktemp("lstm-checkpoint")
    torch.save(module.state_dict(), folder / "model.pth")
    (folder / "vocab.json").write_text(json.dumps(VOCAB))
    (folder / "config.json").write_text(json.dumps(LSTM_CONFIG))
    return folder, module


@pytest.fixture(scope="module")
def served(
    request: pytest.FixtureRequest,
    keras_files: tuple[Path, np.ndarray],
    tutorial_lstm: tuple[Path, Any],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, Server]]:
    """A store holding the generator exported from one Keras format (and the LSTM), served."""
    home = tmp_path_factory.mktemp(f"store-{request.param}")
    done = zoo_cli(home, "export", "gan_generator", "--weights", str(keras_files[0] / f"generator.{request.param}"))
    assert done.returncode == 0, done.stderr
    models = "gan_generator"
    if request.param == "h5":
        done = zoo_cli(home, "export", "lstm_sentiment", "--weights", str(tutorial_lstm[0]))
        assert done.returncode == 0, done.stderr
        models += ",lstm_sentiment"
    with running_server(home, {"ZOOSERVE_MODELS": models}) as server:
        yield request.param, server


@pytest.mark.parametrize("served", ["h5", "keras"], indirect=True)
def test_served_generator_equals_keras_predict(
    served: tuple[str, Server], keras_files: tuple[Path, np.ndarray]
) -> None:
    _, server = served
    client = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
    try:
        tensor = thttp.InferInput("latent", list(LATENTS.shape), "FP32")
        tensor.set_data_from_numpy(LATENTS)
        image = client.infer("gan_generator", [tensor]).as_numpy("image")
    finally:
        client.close()
    expected = keras_files[1]  # Keras: (N, 28, 28, 1); the plugin: (N, 1, 28, 28)
    assert image.shape == (5, 1, 28, 28) and expected.shape == (5, 28, 28, 1)
    np.testing.assert_allclose(image, expected.transpose(0, 3, 1, 2), rtol=0, atol=1e-5)
    assert np.abs(expected).mean() > 0.05  # a real picture of tanh values, not zeros


@pytest.mark.parametrize("served", ["h5"], indirect=True)  # the store that holds the LSTM too
def test_served_lstm_equals_the_tutorial_module(served: tuple[str, Server], tutorial_lstm: tuple[Path, Any]) -> None:
    import torch

    _, server = served
    status, body = http_json(server.url + "/sentiment", {"texts": TEXTS, "model": "lstm_sentiment"})
    assert status == 200, body
    _, module = tutorial_lstm
    for text, result in zip(TEXTS, body["results"], strict=True):
        ids = torch.tensor([[VOCAB.get(word, 1) for word in text.split()]])
        with torch.inference_mode():
            expected = softmax(module(ids)[0].numpy())
        served_probs = [result["probabilities"][label] for label in LSTM_CONFIG["labels"]]
        np.testing.assert_allclose(served_probs, expected, rtol=0, atol=1e-5)
        assert result["label"] == LSTM_CONFIG["labels"][int(np.argmax(expected))]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"units": (128, 512, 1024)}, "layer 'dense' (Dense) has units 128; the generator has 256"),
        ({"slope": 0.3}, "has negative_slope 0.3; the generator has 0.2"),
        ({"momentum": 0.99}, "has momentum 0.99; the generator has 0.8"),
    ],
)
def test_a_keras_file_that_differs_is_named(tmp_path: Path, changes: dict[str, Any], message: str) -> None:
    path = tmp_path / "generator.keras"
    keras_generator(**changes).save(path)
    done = zoo_cli(tmp_path / "home", "export", "gan_generator", "--weights", str(path))
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_the_tutorial_wrapping_model_loads_too(tmp_path: Path, suffix: str) -> None:
    """The tutorial returns `Model(noise, generator(noise))`: the nested Sequential's layers are read."""
    import keras
    import torch

    import zoo

    sequential = keras_generator()
    noise = keras.Input((100,))
    wrapped = keras.Model(noise, sequential(noise))
    path = tmp_path / f"wrapped{suffix}"
    wrapped.save(path)
    module = zoo.create("gan_generator", weights=path).build()
    with torch.inference_mode():
        image = module(torch.from_numpy(LATENTS)).numpy()
    expected = np.asarray(wrapped.predict(LATENTS, verbose=0)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(image, expected, rtol=0, atol=1e-5)
