"""Copy the medians of a benchmark run into ``docs/bench_results.json``.

Run from the repository root, after ``python -m bench`` (or ``nox -s bench``) has
written ``bench/results/bench_*.json``::

    python docs/update_bench_results.py            # update docs/bench_results.json
    python docs/update_bench_results.py --check    # only report what would change

Each row of ``docs/bench_results.json`` names the bench module, workload, variant
and baseline it comes from (its ``bench`` key); rows whose workload is missing
from the results are left alone and reported. Ratios are rounded to whole numbers from 10 up
and to two decimals below, as in the README's table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def rounded(value: float) -> float:
    """Whole numbers from 10 up (16, 23, 30), two decimals below (1.45, 0.97, 5.21)."""
    return float(round(value)) if value >= 10 else round(value, 2)


def main(argv: list[str] | None = None) -> int:
    """Update (or, with ``--check``, compare) ``docs/bench_results.json``; return the status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--check", action="store_true", help="write nothing")
    args = parser.parse_args(argv)

    target = DOCS / "bench_results.json"
    data = json.loads(target.read_text(encoding="utf-8"))
    runs: dict[str, dict] = {}
    for path in sorted(args.results.glob("bench_*.json")):
        run = json.loads(path.read_text(encoding="utf-8"))
        runs[run["module"]] = run
    environment = None
    missing = 0
    for row in data["results"]:
        key = row["bench"]
        run = runs.get(key["module"])
        workload = None
        if run is not None:
            workload = next((w for w in run["workloads"] if w["name"] == key["workload"]), None)
        ratio = None
        if workload is not None:
            ratio = next(
                (
                    r["median"]
                    for r in workload.get("ratios", [])
                    if r["variant"] == key["variant"] and r["baseline"] == key["vs"]
                ),
                None,
            )
        if ratio is None:
            missing += 1
            print(f"not in the results, left at {row['ratio']}: {key}", file=sys.stderr)
            continue
        environment = run["environment"]
        new = rounded(ratio)
        if new != row["ratio"]:
            print(f"{row['workload']} ({row['setting']}): {row['ratio']} -> {new}")
            row["ratio"] = new
    if environment is not None:
        data["machine"] = (
            f"{environment['usable_cpus']} usable CPUs, {environment['implementation']} "
            f"{environment['python'].split()[0]}, numpy {environment['numpy']}, "
            f"pescador {environment['pescador']}, aiostream_mux {environment['aiostream_mux']} "
            f"({environment['git']}); median of paired rounds"
        )
    if not args.check:
        target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 1 if missing and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
