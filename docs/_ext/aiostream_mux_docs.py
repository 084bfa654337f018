"""Figures of the aiostream_mux docs, drawn at every build into ``docs/_generated/``.

- ``mux_*.png``: how each mux interleaves samples. The muxes are real
  aiostream_mux muxes with fixed seeds, over members that tag every sample with
  ``(member, activation, position)``; a grid shows one cell per sample, time step
  on x, member on y, coloured by member, one shade per activation, the cell's
  number being the sample's position within its activation.
- ``determinism.png``: one seeded StochasticMux run three ways — sync members,
  async members, async members with random latencies — giving one sequence.
- ``bench_ratios.png``: the ratios of ``docs/bench_results.json`` as bars, and
  ``bench_table.md``, the same as a table.

It also removes the autosummary stubs of the previous build (``docs/generated/``).

A build fails (and says why) if a figure cannot be drawn, for example if the
three runs of ``determinism.png`` differ.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import shutil
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import matplotlib.ticker
from matplotlib.axes import Axes
from sphinx.application import Sphinx
from sphinx.util import logging

import aiostream_mux as am

LOG = logging.getLogger(__name__)
TIMES = "\N{MULTIPLICATION SIGN}"

Sample = tuple[int, int, int]  # (member, activation number, position in the activation)

#: One colour per member (matplotlib's tab10, colour-blind friendlier than the default cycle).
COLOURS = list(plt.get_cmap("tab10").colors)  # type: ignore[attr-defined]
PNG_METADATA = {"Software": None}  # no matplotlib version in the file: stable bytes


# -- members that tag their samples


class Tagger:
    """Make member streamers whose samples say which member and activation gave them.

    Every activation of a member draws the next number from one counter shared by
    the members of a mux, so activations are numbered in the order the mux starts them.
    """

    def __init__(self) -> None:
        self._activations = itertools.count()

    def sync(self, member: int, length: int | None = None) -> am.Streamer[Sample]:
        """Return a member over a sync generator: ``length`` samples, or endless."""
        return am.Streamer(self._sync_gen, member, length)

    def asynchronous(
        self, member: int, length: int | None = None, latency: float = 0.0, seed: int = 0
    ) -> am.Streamer[Sample]:
        """Return a member over an async generator; each sample waits up to ``latency`` s."""
        return am.Streamer(self._async_gen, member, length, latency, seed)

    def _sync_gen(self, member: int, length: int | None) -> Iterator[Sample]:
        activation = next(self._activations)
        for i in itertools.count() if length is None else range(length):
            yield member, activation, i

    async def _async_gen(
        self, member: int, length: int | None, latency: float, seed: int
    ) -> AsyncIterator[Sample]:
        activation = next(self._activations)
        rng = random.Random(seed * 1000 + activation)
        for i in itertools.count() if length is None else range(length):
            if latency:
                await asyncio.sleep(rng.uniform(0, latency))
            yield member, activation, i


# -- drawing


def _lanes(samples: Sequence[Sample]) -> dict[int, tuple[int, int]]:
    """For each activation: ``(lane, lanes in its row)``; overlapping activations share a row.

    ``StochasticMux(mode="with_replacement")`` may run one member twice at once:
    its row is then split into lanes.
    """
    spans: dict[int, list[int]] = {}
    member_of: dict[int, int] = {}
    for t, (member, activation, _) in enumerate(samples):
        span = spans.setdefault(activation, [t, t])
        span[1] = t
        member_of[activation] = member
    lanes: dict[int, int] = {}
    by_member: dict[int, list[int]] = {}
    for activation in sorted(spans, key=lambda a: spans[a][0]):
        busy = by_member.setdefault(member_of[activation], [])  # last step of each lane
        for lane, end in enumerate(busy):
            if end < spans[activation][0]:
                busy[lane] = spans[activation][1]
                break
        else:
            lane = len(busy)
            busy.append(spans[activation][1])
        lanes[activation] = lane
    return {a: (lanes[a], len(by_member[member_of[a]])) for a in spans}


def draw_grid(ax: Axes, samples: Sequence[Sample], n_members: int, title: str) -> None:
    """One cell per sample: time step on x, member on y; text: position in the activation."""
    lanes = _lanes(samples)
    shade: dict[int, int] = {}  # activation -> how many activations of its member came before
    seen: dict[int, int] = {}
    for member, activation, _ in samples:
        if activation not in shade:
            shade[activation] = seen.get(member, 0)
            seen[member] = shade[activation] + 1
    for t, (member, activation, position) in enumerate(samples):
        lane, n_lanes = lanes[activation]
        height = 0.9 / n_lanes
        y = member - 0.45 + lane * height
        base = mcolors.to_rgb(COLOURS[member % len(COLOURS)])
        colour = base if shade[activation] % 2 == 0 else tuple(0.55 * c for c in base)
        ax.add_patch(plt.Rectangle((t - 0.45, y), 0.9, height, color=colour, lw=0))
        if n_lanes == 1:
            ax.text(t, member, str(position), ha="center", va="center", fontsize=6, color="white")
    ax.set_xlim(-0.7, max(len(samples), 1) - 0.3)
    ax.set_ylim(n_members - 0.5, -0.5)
    ax.set_yticks(range(n_members))
    ax.set_yticklabels([f"streamer {k}" for k in range(n_members)], fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.set_title(title, fontsize=9, loc="left", family="monospace")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def save_panels(
    path: Path,
    panels: Sequence[tuple[str, Sequence[Sample]]],
    n_members: int,
    steps: int,
) -> None:
    """Stack one grid per panel, sharing the time axis, and write a PNG."""
    height = 0.55 + sum(0.3 + 0.23 * n_members for _ in panels)
    fig, axes = plt.subplots(
        len(panels), 1, figsize=(0.17 * steps + 1.6, height), sharex=True, squeeze=False
    )
    for ax, (title, samples) in zip(axes[:, 0], panels, strict=True):
        draw_grid(ax, samples, n_members, title)
        ax.set_xlim(-0.7, steps - 0.3)
    axes[-1, 0].set_xlabel("time step (sample index in the mux's output)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=PNG_METADATA)
    plt.close(fig)


# -- the figures


def take(mux: am.Streamer[Sample], n: int) -> list[Sample]:
    """Return the first ``n`` samples, activations numbered in order of first appearance.

    Members number their activations when they start, and async members may start
    in any order (the driver starts some early): only the output order counts.
    """
    numbers: dict[int, int] = {}
    return [
        (member, numbers.setdefault(activation, len(numbers)), position)
        for member, activation, position in mux(max_iter=n)
    ]


def figure_stochastic(out: Path) -> None:
    """StochasticMux in its three modes, over endless members."""
    steps, n = 48, 6
    panels = []
    for mode in ("with_replacement", "single_active", "exhaustive"):
        tag = Tagger()
        mux = am.StochasticMux(
            [tag.sync(k) for k in range(n)], n_active=2, rate=4, mode=mode, random_state=7
        )
        call = f"StochasticMux(6 streamers, n_active=2, rate=4, mode={mode!r}, random_state=7)"
        panels.append((call, take(mux, steps)))
    save_panels(out / "mux_stochastic.png", panels, n, steps)


def figure_shuffled(out: Path) -> None:
    """ShuffledMux, uniform and weighted."""
    steps, n = 48, 4
    tag = Tagger()
    uniform = am.ShuffledMux([tag.sync(k) for k in range(n)], random_state=1)
    tag = Tagger()
    weights = [4, 2, 1, 1]
    weighted = am.ShuffledMux([tag.sync(k) for k in range(n)], weights=weights, random_state=1)
    panels = [
        ("ShuffledMux(4 streamers, random_state=1)", take(uniform, steps)),
        (f"ShuffledMux(4 streamers, weights={weights}, random_state=1)", take(weighted, steps)),
    ]
    save_panels(out / "mux_shuffled.png", panels, n, steps)


LENGTHS = [3, 1, 4, 2]  # samples per activation of each member, for the finite muxes


def figure_roundrobin(out: Path) -> None:
    """RoundRobinMux in its three modes, over members of different lengths."""
    steps, n = 30, len(LENGTHS)
    panels = []
    for mode in ("exhaustive", "cycle", "permuted_cycle"):
        tag = Tagger()
        mux = am.RoundRobinMux(
            [tag.sync(k, length) for k, length in enumerate(LENGTHS)], mode=mode, random_state=2
        )
        call = f"RoundRobinMux(streamers of {LENGTHS} samples, mode={mode!r})"
        panels.append((call, take(mux, steps)))
    save_panels(out / "mux_roundrobin.png", panels, n, steps)


def figure_chain(out: Path) -> None:
    """ChainMux, exhaustive and cycling."""
    steps, n = 30, len(LENGTHS)
    panels = []
    for mode in ("exhaustive", "cycle"):
        tag = Tagger()
        mux = am.ChainMux([tag.sync(k, length) for k, length in enumerate(LENGTHS)], mode=mode)
        call = f"ChainMux(streamers of {LENGTHS} samples, mode={mode!r})"
        panels.append((call, take(mux, steps)))
    save_panels(out / "mux_chain.png", panels, n, steps)


def figure_determinism(out: Path) -> None:
    """Run one seeded StochasticMux three ways; fail the build unless they agree."""
    steps, n = 48, 6

    def mux(make: Callable[[int], am.Streamer[Sample]]) -> am.StochasticMux[Sample]:
        members = [make(k) for k in range(n)]
        return am.StochasticMux(members, n_active=3, rate=4, mode="single_active", random_state=5)

    tag = Tagger()
    sync = take(mux(tag.sync), steps)
    tag = Tagger()
    fast = take(mux(tag.asynchronous), steps)
    tag = Tagger()
    slow = take(mux(lambda k: tag.asynchronous(k, latency=0.004, seed=k)), steps)
    if not sync == fast == slow:
        raise RuntimeError(
            "determinism.png: one seeded StochasticMux gave different sequences "
            f"with sync, async and slow async members:\n{sync}\n{fast}\n{slow}"
        )
    call = "StochasticMux(6 streamers, n_active=3, rate=4, mode='single_active', random_state=5)"
    panels = [
        (f"{call}: sync members, plain for", sync),
        (f"{call}: async members", fast),
        (f"{call}: async members, each sample waits 0-4 ms at random", slow),
    ]
    save_panels(out / "determinism.png", panels, n, steps)


def figure_bench(out: Path, results: Path) -> None:
    """Horizontal bars, log scale: aiostream_mux's speed over its baseline, per workload."""
    data = json.loads(results.read_text(encoding="utf-8"))
    rows = data["results"]
    labels = [f"{row['workload']}\n({row['setting']}, vs {row['baseline']})" for row in rows]
    ratios = [float(row["ratio"]) for row in rows]
    fig, ax = plt.subplots(figsize=(8.5, 0.48 * len(rows) + 1.2))
    y = list(range(len(rows)))
    colours = [COLOURS[2] if r >= 1 else COLOURS[3] for r in ratios]
    # Bars grow from 1x: right when aiostream_mux is faster, left when slower.
    ax.barh(y, [r - 1 for r in ratios], left=1, color=colours, height=0.6)
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    for yi, ratio in zip(y, ratios, strict=True):
        right = ratio >= 1
        ax.text(
            ratio * (1.06 if right else 1 / 1.06),
            yi,
            f"{ratio:g}{TIMES}",
            va="center",
            ha="left" if right else "right",
            fontsize=8,
        )
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=7.5)
    ax.invert_yaxis()
    ax.set_xlim(min(0.5, min(ratios) / 1.5), max(ratios) * 2.2)
    low, high = ax.get_xlim()
    ticks = [t for t in (0.5, 1, 2, 5, 10, 20, 50, 100) if low <= t <= high]
    ax.set_xticks(ticks)
    ax.set_xticklabels([f"{t:g}{TIMES}" for t in ticks])
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(
        "items/s of aiostream_mux ÷ items/s of the baseline, median of paired rounds "
        "(log scale; > 1 is faster)",
        fontsize=8,
    )
    ax.set_title(data["machine"], fontsize=8, loc="left")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.savefig(out / "bench_ratios.png", dpi=110, metadata=PNG_METADATA, bbox_inches="tight")
    plt.close(fig)


def table_bench(out: Path, results: Path) -> None:
    """Write the ratios of ``docs/bench_results.json`` as a Markdown table."""
    rows = json.loads(results.read_text(encoding="utf-8"))["results"]
    lines = [
        "| workload | consumed with | baseline | aiostream_mux / baseline |",
        "|---|---|---|---|",
    ]
    for row in rows:
        workload = row["workload"].replace("|", "\\|")
        lines.append(
            f"| `{workload}` | {row['setting']} | {row['baseline']} | {row['ratio']:g}{TIMES} |"
        )
    (out / "bench_table.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


FIGURES: list[Callable[[Path], None]] = [
    figure_stochastic,
    figure_shuffled,
    figure_roundrobin,
    figure_chain,
    figure_determinism,
]


def generate(app: Sphinx) -> None:
    """Draw every figure into ``<srcdir>/_generated/`` (``builder-inited``)."""
    out = Path(app.srcdir) / "_generated"
    out.mkdir(exist_ok=True)
    with plt.rc_context({"font.size": 8}):
        for figure in FIGURES:
            figure(out)
        figure_bench(out, Path(app.srcdir) / "bench_results.json")
    table_bench(out, Path(app.srcdir) / "bench_results.json")
    LOG.info("aiostream_mux_docs: figures written to %s", out)


def clean_stubs(app: Sphinx, config: Any) -> None:
    """Remove the autosummary stubs of the last build (``config-inited``).

    autosummary writes ``generated/*.rst`` but never deletes them: the stub of a name
    that left the API would stay, outside any toctree, and fail a ``-W`` build.
    """
    stubs = Path(app.srcdir) / "generated"
    if stubs.is_dir():
        shutil.rmtree(stubs)


def setup(app: Sphinx) -> dict[str, Any]:
    """Register the stub cleaning and the figures with Sphinx."""
    app.connect("config-inited", clean_stubs)
    app.connect("builder-inited", generate)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
