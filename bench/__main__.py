"""``python -m bench [NAME ...]``: run the ``bench_*.py`` modules of this package.

Each module defines ``workloads(*, quick: bool) -> list[Workload]``. With no NAME
every module runs; ``python -m bench streamer`` runs ``bench_streamer.py`` only.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from ._harness import (
    WorkloadResult,
    environment,
    format_environment,
    format_result,
    run_workload,
)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
PREFIX = "bench_"


def available() -> list[str]:
    """Short names (without ``bench_``) of the benchmark modules, sorted."""
    return sorted(
        info.name.removeprefix(PREFIX)
        for info in pkgutil.iter_modules([str(HERE)])
        if info.name.startswith(PREFIX)
    )


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not an integer") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run aiostream_mux benchmarks against pescador 3.0, "
        "interleaved in one process.",
    )
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"modules to run (default: all of {available()})"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=_env_int("BENCH_REPEATS", 7),
        help="timed rounds per workload (default 7, or $BENCH_REPEATS)",
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=_env_int("BENCH_WARMUP", 1),
        help="untimed rounds before timing (default 1, or $BENCH_WARMUP)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=_env_flag("BENCH_QUICK"),
        help="smaller workloads, for a smoke test (or $BENCH_QUICK=1)",
    )
    parser.add_argument(
        "-k",
        dest="keyword",
        default=None,
        help="only run workloads whose name contains this substring",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the JSON results; only with a single module "
        "(default: bench/results/bench_<NAME>.json)",
    )
    parser.add_argument(
        "--strict", action="store_true", help="exit with status 1 if any target is missed"
    )
    parser.add_argument("--list", action="store_true", help="list the modules and exit")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats} must be >= 1")
    if args.warmup < 0:
        parser.error(f"--warmup={args.warmup} must be >= 0")
    names = [n.removeprefix(PREFIX).removesuffix(".py") for n in args.names] or available()
    unknown = sorted(set(names) - set(available()))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; available: {available()}")
    if args.json is not None and len(names) != 1:
        parser.error(f"--json takes one module, but {len(names)} were selected")
    args.names = names
    return args


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"{__package__ or 'bench'}.{PREFIX}{name}")
    except ImportError as exc:
        raise SystemExit(
            f"cannot import bench/{PREFIX}{name}.py: {exc}\n"
            "install the benchmark extras: pip install -e '.[bench]'"
        ) from exc


def run_module(name: str, args: argparse.Namespace, env: dict[str, Any]) -> list[WorkloadResult]:
    module = _import(name)
    results: list[WorkloadResult] = []
    print(f"\n### {PREFIX}{name}{' (quick)' if args.quick else ''}", flush=True)
    for workload in module.workloads(quick=args.quick):
        if args.keyword is not None and args.keyword not in workload.name:
            continue
        repeats = args.repeats * workload.round_factor
        result = run_workload(workload, repeats=repeats, warmup=args.warmup)
        print(format_result(result), flush=True)
        results.append(result)
    path: Path = args.json if args.json is not None else RESULTS / f"{PREFIX}{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "module": f"{PREFIX}{name}",
        "quick": args.quick,
        "environment": env,
        "workloads": [r.to_json() for r in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    print(f"(results written to {path})")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.list:
        print("\n".join(args.names))
        return 0
    env = environment()
    print(format_environment(env))
    print(f"repeats {args.repeats}, warm-up {args.warmup}; medians over rounds, paired ratios")
    missed: list[str] = []
    for name in args.names:
        for result in run_module(name, args, env):
            missed += [
                f"{result.workload.name}: {r.ratio.variant} / {r.ratio.baseline}"
                f" = {r.median:.3f} < {r.ratio.target}"
                for r in result.ratios
                if r.status == "MISS"
            ]
    if missed:
        print("\nMISSED TARGETS:\n  " + "\n  ".join(missed))
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
