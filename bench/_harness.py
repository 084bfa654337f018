"""A small benchmark harness: interleaved rounds, medians, paired ratios.

A :class:`Workload` is a named set of *variants*. A variant is a zero-argument
callable that runs the workload once and returns how many items it processed;
async variants are wrapped with :func:`run_async`, so every variant is a plain
sync callable (and pays for one ``asyncio.run``).

:func:`run_workload` runs all variants of a workload in the same process,
interleaved: after ``warmup`` untimed rounds, each of ``repeats`` timed rounds
runs every variant once, starting from a different variant each round
(round-robin rotation), so slow drifts of a noisy machine hit all variants
alike. Each timed run starts with ``gc.collect()`` and runs with the garbage
collector disabled.

Reported per variant: the median time and the median items/s over rounds.
Reported per ratio ``A / B``: for each round, items/s of A divided by items/s
of B *in that round*, then the median (and min, max) over rounds. Only medians
and paired ratios: means and best-of-N are too easily moved by a busy
neighbour on a 2-core machine.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import importlib.metadata
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Ratio",
    "RatioResult",
    "VariantResult",
    "Workload",
    "WorkloadResult",
    "environment",
    "format_environment",
    "format_result",
    "run_async",
    "run_workload",
]

Variant = Callable[[], int]


def run_async(main: Callable[[], Coroutine[Any, Any, int]]) -> Variant:
    """Turn ``async def main() -> int`` into a sync variant that runs it with ``asyncio.run``."""

    def variant() -> int:
        return asyncio.run(main())

    variant.__name__ = getattr(main, "__name__", "variant")
    return variant


@dataclass(frozen=True)
class Ratio:
    """Report items/s of ``variant`` over items/s of ``baseline``, paired per round.

    With a ``target``, the median ratio is marked PASS when ``>= target``, else MISS.
    """

    variant: str
    baseline: str
    target: float | None = None


@dataclass(frozen=True)
class Workload:
    """Variants (name -> callable, in display order) that do the same work."""

    name: str
    variants: dict[str, Variant]
    ratios: tuple[Ratio, ...] = ()
    #: Every run of every variant must return exactly this many items.
    items: int | None = None
    note: str = ""
    #: Rounds to run per round asked for: short rounds whose paired ratios
    #: scatter widely get more of them, so their medians settle.
    round_factor: int = 1

    def __post_init__(self) -> None:
        if not self.variants:
            raise ValueError(f"workload {self.name!r} has no variants")
        for ratio in self.ratios:
            for name in (ratio.variant, ratio.baseline):
                if name not in self.variants:
                    raise ValueError(
                        f"workload {self.name!r}: ratio names unknown variant {name!r}"
                    )


@dataclass
class VariantResult:
    name: str
    times: list[float] = field(default_factory=list)  # seconds, one per round
    items: list[int] = field(default_factory=list)

    @property
    def rates(self) -> list[float]:
        return [n / t for n, t in zip(self.items, self.times, strict=True)]

    @property
    def median_time(self) -> float:
        return statistics.median(self.times)

    @property
    def median_rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def spread(self) -> float:
        """(max - min) / median of the times: how noisy this variant was."""
        return (max(self.times) - min(self.times)) / self.median_time

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "median_time_s": self.median_time,
            "median_items_per_s": self.median_rate,
            "spread": self.spread,
            "times_s": self.times,
            "items": self.items,
        }


@dataclass
class RatioResult:
    ratio: Ratio
    per_round: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.per_round)

    @property
    def status(self) -> str:
        """``PASS``/``MISS`` against the target, ``info`` when there is none."""
        if self.ratio.target is None:
            return "info"
        return "PASS" if self.median >= self.ratio.target else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "variant": self.ratio.variant,
            "baseline": self.ratio.baseline,
            "median": self.median,
            "min": min(self.per_round),
            "max": max(self.per_round),
            "target": self.ratio.target,
            "status": self.status,
            "per_round": self.per_round,
        }


@dataclass
class WorkloadResult:
    workload: Workload
    repeats: int
    warmup: int
    variants: dict[str, VariantResult]
    ratios: list[RatioResult]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.workload.name,
            "note": self.workload.note,
            "items": self.workload.items,
            "repeats": self.repeats,
            "warmup": self.warmup,
            "variants": [v.to_json() for v in self.variants.values()],
            "ratios": [r.to_json() for r in self.ratios],
        }


def _time_once(fn: Variant) -> tuple[float, int]:
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        items = fn()
        elapsed = time.perf_counter() - start
    finally:
        if was_enabled:
            gc.enable()
    return elapsed, items


def _check_items(workload: Workload, name: str, items: int) -> None:
    if not isinstance(items, int) or items <= 0:
        raise RuntimeError(
            f"{workload.name} / {name}: variant returned {items!r}, expected a positive item count"
        )
    if workload.items is not None and items != workload.items:
        raise RuntimeError(
            f"{workload.name} / {name}: processed {items} items, expected {workload.items}"
        )


def run_workload(workload: Workload, *, repeats: int = 7, warmup: int = 1) -> WorkloadResult:
    """Run every variant ``warmup`` times untimed, then ``repeats`` interleaved timed rounds."""
    if repeats < 1:
        raise ValueError(f"repeats={repeats} must be >= 1")
    names = list(workload.variants)
    for _ in range(warmup):
        for name in names:
            _check_items(workload, name, workload.variants[name]())
    results = {name: VariantResult(name) for name in names}
    for round_ in range(repeats):
        start = round_ % len(names)
        for name in names[start:] + names[:start]:
            elapsed, items = _time_once(workload.variants[name])
            _check_items(workload, name, items)
            results[name].times.append(elapsed)
            results[name].items.append(items)
    ratios = [
        RatioResult(
            ratio,
            [
                a / b
                for a, b in zip(
                    results[ratio.variant].rates, results[ratio.baseline].rates, strict=True
                )
            ],
        )
        for ratio in workload.ratios
    ]
    return WorkloadResult(workload, repeats, warmup, results, ratios)


def _rate(x: float) -> str:
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if x >= scale:
            return f"{x / scale:7.2f} {unit}/s"
    return f"{x:7.2f}  /s"


def format_result(result: WorkloadResult) -> str:
    """Render one workload's result as a plain-text table."""
    w = result.workload
    items = f"{w.items:,} items, " if w.items is not None else ""
    lines = [f"== {w.name}  ({items}{result.repeats} rounds, {result.warmup} warm-up)"]
    if w.note:
        lines.append(f"   {w.note}")
    width = max(len(name) for name in result.variants) + 2
    lines.append(f"   {'variant':<{width}}{'median ms':>11}{'median items/s':>17}{'spread':>9}")
    for v in result.variants.values():
        lines.append(
            f"   {v.name:<{width}}{v.median_time * 1e3:11.2f}{_rate(v.median_rate):>17}"
            f"{v.spread:8.0%} "
        )
    for r in result.ratios:
        target = f"target >= {r.ratio.target:.2f}" if r.ratio.target is not None else ""
        lines.append(
            f"   ratio {r.ratio.variant} / {r.ratio.baseline}: median {r.median:.3f}"
            f"  [min {min(r.per_round):.3f}, max {max(r.per_round):.3f}]"
            f"  {target}  {r.status}".rstrip()
        )
    return "\n".join(lines)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_describe() -> str | None:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def environment() -> dict[str, Any]:
    """Where and with what the numbers were taken."""
    try:
        import aiostream_mux

        mux_version: str | None = aiostream_mux.__version__
    except ImportError:
        mux_version = None
    affinity = getattr(os, "sched_getaffinity", None)
    return {
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "python": sys.version,
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else None,
        "numpy": _version("numpy"),
        "pescador": _version("pescador"),
        "anyio": _version("anyio"),
        "aiostream_mux": mux_version,
        "git": _git_describe(),
        "timer": "time.perf_counter",
        "gc": "collected before, disabled during each timed run",
    }


def format_environment(env: dict[str, Any]) -> str:
    python = str(env["python"]).split()[0]
    return (
        f"Python {python} ({env['implementation']}), numpy {env['numpy']}, "
        f"pescador {env['pescador']}, aiostream_mux {env['aiostream_mux']} ({env['git']}), "
        f"cpu_count {env['cpu_count']}"
    )
