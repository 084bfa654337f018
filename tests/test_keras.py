"""Keras 3, on its PyTorch backend, trains from keras_tuples and from a StreamerDataset."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import aiostream_mux as am
from aiostream_mux.torch import StreamerDataset

from .conftest import Lifecycle

TRUE_W = np.array([1.0, -2.0, 3.0], dtype=np.float32)


def samples(shard: int, n: int) -> Iterator[dict[str, Any]]:
    rng = np.random.default_rng(shard)
    for _ in range(n):
        x = rng.normal(size=3).astype(np.float32)
        yield {"a": x[:2], "b": x[2:], "x": x, "y": np.array([x @ TRUE_W], dtype=np.float32)}


@pytest.fixture(scope="module")
def keras(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """Keras on the PyTorch backend, its settings file kept in a temporary directory."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KERAS_BACKEND", "torch")  # read once, when keras is first imported
        patch.setenv("KERAS_HOME", str(tmp_path_factory.mktemp("keras")))
        module = importlib.import_module("keras")
    assert module.backend.backend() == "torch"
    return module


def linear_model(keras: ModuleType) -> Any:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def kernel(model: Any, layer: int = 0) -> np.ndarray[Any, Any]:
    # Through torch: numpy 2 warns on Keras variables' __array__.
    return model.layers[layer].kernel.value.detach().numpy().ravel()  # type: ignore[no-any-return]


def mux(n_shards: int = 6, n: int = 200, source: Any = samples) -> am.StochasticMux[Any]:
    members = [am.Streamer(source, k, n) for k in range(n_shards)]
    return am.StochasticMux(members, n_active=3, rate=16, random_state=0)


def test_fit_on_a_generator_of_keras_tuples(keras: ModuleType, lifecycle: Lifecycle) -> None:
    def recorded(shard: int, n: int) -> Iterator[dict[str, Any]]:
        for _ in lifecycle.sync_source(1):  # records this source's start and its finally:
            yield from samples(shard, n)

    batches = am.keras_tuples(am.buffer_stream(mux(source=recorded), 32), "x", "y")
    model = linear_model(keras)
    with batches:
        # Keras 3 takes generator objects only: a Stream goes through a generator expression.
        history = model.fit(
            (xy for xy in batches), steps_per_epoch=30, epochs=2, shuffle=False, verbose=0
        )
    losses = [float(loss) for loss in history.history["loss"]]
    assert losses[-1] < min(1e-3, losses[0] / 100)
    np.testing.assert_allclose(kernel(model), TRUE_W, atol=0.05)
    assert lifecycle.started > 0


def test_fit_with_several_inputs(keras: ModuleType) -> None:
    batches = am.keras_tuples(am.buffer_stream(mux(), 32), inputs=("a", "b"), outputs="y")
    a, b = keras.Input((2,)), keras.Input((1,))
    out = keras.layers.Dense(1)(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], out)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    with batches:
        history = model.fit(
            (xy for xy in batches), steps_per_epoch=30, epochs=2, shuffle=False, verbose=0
        )
    assert float(history.history["loss"][-1]) < 1e-3
    np.testing.assert_allclose(kernel(model, layer=3), TRUE_W, atol=0.05)


def test_fit_on_a_dataloader_with_workers(keras: ModuleType) -> None:
    recipe = am.Streamer(am.keras_tuples, mux().buffer(32), "x", "y")
    loader = DataLoader(StreamerDataset(recipe, cycle=True), batch_size=None, num_workers=2)
    torch.manual_seed(0)
    model = linear_model(keras)
    history = model.fit(loader, steps_per_epoch=30, epochs=2, shuffle=False, verbose=0)
    assert float(history.history["loss"][-1]) < 1e-3
    np.testing.assert_allclose(kernel(model), TRUE_W, atol=0.05)
