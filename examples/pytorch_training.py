"""A PyTorch training loop fed by a mux through a DataLoader with two workers.

Sixteen shards of synthetic regression data go through a StochasticMux, then
``buffer`` and ``tuples`` make batches; :class:`aiostream_mux.torch.StreamerDataset`
hands that recipe to a ``DataLoader(num_workers=2)``. Worker 0 runs shards 0,
2, 4, ... and worker 1 shards 1, 3, 5, ...: every epoch sees each sample once.
A naive ``IterableDataset`` around the same recipe makes each worker yield
everything — every sample twice (pescador #133) — as the first lines show.

Run it with ``python examples/pytorch_training.py`` (needs ``torch``).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

import aiostream_mux as am
from aiostream_mux.torch import StreamerDataset

N_SHARDS = 16
SHARD_SIZE = 128
FEATURES = 8
BATCH = 32
EPOCHS = 4
TRUE_W = np.linspace(-1.0, 1.0, FEATURES, dtype=np.float32)
TRUE_B = 0.5


def shard(shard_id: int, n: int) -> Iterator[dict[str, Any]]:
    """One shard: ``n`` samples of ``y = x @ TRUE_W + TRUE_B + noise``, each with a unique id."""
    rng = np.random.default_rng(shard_id)
    for i in range(n):
        x = rng.normal(size=FEATURES).astype(np.float32)
        y = np.float32(x @ TRUE_W + TRUE_B + rng.normal(scale=0.01))
        yield {"x": x, "y": y, "id": shard_id * n + i}


def batches_recipe() -> am.Streamer[tuple[Any, ...]]:
    """Every shard once per epoch, four interleaved at a time, in batches of (x, y, id)."""
    mux = am.StochasticMux(
        [am.Streamer(shard, k, SHARD_SIZE) for k in range(N_SHARDS)],
        n_active=4,
        rate=None,  # read each shard to its end ...
        mode="exhaustive",  # ... once per epoch
    )
    return mux.buffer(BATCH, partial=True).tuples("x", "y", "id")


class NaiveDataset(IterableDataset[tuple[Any, ...]]):
    """What not to do: every worker iterates the whole recipe."""

    def __init__(self, streamer: am.Streamer[tuple[Any, ...]]) -> None:
        self.streamer = streamer

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(self.streamer)


def sample_ids(loader: DataLoader[tuple[Any, ...]]) -> Counter[int]:
    return Counter(int(i) for _, _, ids in loader for i in ids)


def main() -> None:
    torch.manual_seed(0)
    recipe = batches_recipe()
    total = N_SHARDS * SHARD_SIZE

    naive = sample_ids(DataLoader(NaiveDataset(recipe), batch_size=None, num_workers=2))
    print(
        f"naive IterableDataset, 2 workers: {sum(naive.values())} samples for {total}, "
        f"{sum(c - 1 for c in naive.values())} repeats"
    )

    loader = DataLoader(StreamerDataset(recipe), batch_size=None, num_workers=2)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = torch.nn.MSELoss()
    start = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        seen: Counter[int] = Counter()
        losses = []
        for x, y, ids in loader:
            optimizer.zero_grad()
            loss = loss_fn(model(x).squeeze(1), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            seen.update(ids.tolist())
        repeats = sum(c - 1 for c in seen.values())
        print(
            f"epoch {epoch}: {len(losses)} batches, {sum(seen.values())} samples "
            f"({len(seen)} distinct of {total}, {repeats} repeats), "
            f"mean loss {np.mean(losses):.4f}"
        )
        if len(seen) != total or repeats:
            raise SystemExit("the workers did not divide the data")

    learned = model.weight.detach().numpy().ravel()
    print(f"{EPOCHS} epochs in {time.perf_counter() - start:.2f} s")
    print(f"largest weight error {np.abs(learned - TRUE_W).max():.3f}")
    print(f"bias {model.bias.item():.3f} (true {TRUE_B})")
    print("done")


if __name__ == "__main__":
    main()
