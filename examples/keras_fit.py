"""Keras ``model.fit`` on batches from a mux, through ``keras_tuples``.

Keras 3 runs here on its PyTorch backend, so neither TensorFlow nor JAX is
needed: set ``KERAS_BACKEND=torch`` before importing keras (this script does).
Two ways to feed ``fit``:

1. a Python generator over ``keras_tuples(...)``: Keras 3 takes generator
   objects (it checks for one, so wrap the Stream: ``(xy for xy in stream)``);
2. with the torch backend, a ``DataLoader`` over
   :class:`aiostream_mux.torch.StreamerDataset`, so that two worker processes
   divide the shards between them.

Run it with ``python examples/keras_fit.py`` (needs ``keras`` and ``torch``).
"""

from __future__ import annotations

import os
import tempfile

# Keras picks its backend when imported: PyTorch here. It also writes its settings
# under KERAS_HOME (default ~/.keras): keep this demo's apart.
os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("KERAS_HOME", os.path.join(tempfile.gettempdir(), "aiostream_mux-keras"))

import time
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import torch

import aiostream_mux as am
from aiostream_mux.torch import StreamerDataset

N_SHARDS = 8
FEATURES = 4
BATCH = 32
STEPS = 40
TRUE_W = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)


def shard(shard_id: int, n: int) -> Iterator[dict[str, Any]]:
    """One shard of ``n`` samples of ``y = x @ TRUE_W`` (a module-level source: it pickles)."""
    rng = np.random.default_rng(shard_id)
    for _ in range(n):
        x = rng.normal(size=FEATURES).astype(np.float32)
        yield {"x": x, "y": np.array([x @ TRUE_W], dtype=np.float32)}


def mux() -> am.StochasticMux[dict[str, Any]]:
    return am.StochasticMux(
        [am.Streamer(shard, k, 256) for k in range(N_SHARDS)], n_active=4, rate=16, random_state=0
    )


def new_model() -> keras.Model:
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return model


def weight_error(model: keras.Model) -> float:
    kernel = model.layers[0].kernel.value.detach().cpu().numpy().ravel()  # a torch tensor
    return float(np.abs(kernel - TRUE_W).max())


def from_generator() -> None:
    batches = am.keras_tuples(am.buffer_stream(mux(), BATCH), inputs="x", outputs="y")
    model = new_model()
    with batches:  # closes the sources when done
        history = model.fit(
            (xy for xy in batches), steps_per_epoch=STEPS, epochs=3, shuffle=False, verbose=0
        )
    losses = [float(loss) for loss in history.history["loss"]]
    print(f"generator:  loss per epoch {[f'{x:.4f}' for x in losses]}, ", end="")
    print(f"largest weight error {weight_error(model):.4f}")


def from_dataloader() -> None:
    recipe = am.Streamer(am.keras_tuples, mux().buffer(BATCH), "x", "y")
    # cycle=True: an endless dataset, cut into epochs by steps_per_epoch.
    dataset = StreamerDataset(recipe, cycle=True)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    model = new_model()
    history = model.fit(loader, steps_per_epoch=STEPS, epochs=3, shuffle=False, verbose=0)
    losses = [float(loss) for loss in history.history["loss"]]
    print(f"DataLoader: loss per epoch {[f'{x:.4f}' for x in losses]}, ", end="")
    print(f"largest weight error {weight_error(model):.4f}")


def main() -> None:
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}")
    torch.manual_seed(0)
    start = time.perf_counter()
    from_generator()
    from_dataloader()
    print(f"trained in {time.perf_counter() - start:.2f} s")
    print("done")


if __name__ == "__main__":
    main()
