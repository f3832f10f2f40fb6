"""How long `postmortem analyze` takes on a big dump: 1,000 processes x 5 rounds by default.

    python benchmarks/analyze.py [--processes 1000] [--rounds 5] [--runs 3] [--seed 0]
                                 [--dump DIR] [--keep DIR] [--no-cli]

Builds a synthetic dump shaped like the real samples (benchmarks/synthetic.py: one ps
SIGSTOPped, the chief in Saver.save, every other worker in session.run) in a temporary
directory, or reuses the one given with --dump, then prints the median of --runs of:

* `load_dump(DUMP)`: reading and parsing every file into DataFrames;
* `analyze(dump)`: the verdict from the loaded frames;
* `postmortem analyze DUMP --json` as a subprocess: imports, load, analyze, JSON out.

It also says whether the verdict still names the culprit the dump was built with (the
benchmark does not fail on it). Target: analyze under 5 s at 1,000 x 5 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic import make_dump  # noqa: E402

from postmortem.analysis import analyze  # noqa: E402
from postmortem.loading import load_dump  # noqa: E402
from postmortem.serialize import verdict_summary  # noqa: E402


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def cli(dump: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "postmortem", "analyze", str(dump), "--json"],
        check=True, capture_output=True, text=True,
        env={**os.environ, "POSTMORTEM_CACHE": "off"},  # every run cold (benchmarks/cache.py)
    )
    document: dict[str, Any] = json.loads(out.stdout)
    return document


def bench(dump: Path, runs: int, with_cli: bool) -> dict[str, Any]:
    loads, analyses, commands = [], [], []
    verdict: dict[str, Any] = {}
    rows: dict[str, int] = {}
    for _ in range(runs):
        seconds, loaded = timed(lambda: load_dump(dump))
        loads.append(seconds)
        rows = {name: len(frame) for name, frame in loaded.frames_by_name.items()}
        seconds, result = timed(lambda: analyze(loaded))  # noqa: B023
        analyses.append(seconds)
        verdict = verdict_summary(result.verdict.finding)
    if with_cli:
        for _ in range(runs):
            seconds, document = timed(lambda: cli(dump))
            commands.append(seconds)
            verdict = document["verdict"]
    return {
        "load": statistics.median(loads),
        "analyze": statistics.median(analyses),
        "cli": statistics.median(commands) if commands else None,
        "runs": {"load": loads, "analyze": analyses, "cli": commands},
        "rows": rows,
        "verdict": verdict,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dump", type=Path, help="an existing dump to time (no build)")
    parser.add_argument("--keep", type=Path, help="build the dump here and keep it")
    parser.add_argument("--no-cli", action="store_true", help="skip the subprocess timing")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()

    workdir = None
    truth: dict[str, Any] | None = None
    if args.dump is not None:
        dump = args.dump
        truth_file = dump / "truth.json"
        truth = json.loads(truth_file.read_text()) if truth_file.exists() else None
        built = 0.0
    else:
        if args.keep is not None:
            dump = args.keep
        else:
            workdir = Path(tempfile.mkdtemp(prefix="postmortem-bench-"))
            dump = workdir / "dump"
        built, truth = timed(lambda: make_dump(dump, args.processes, args.rounds, args.seed))
    try:
        size = sum(f.stat().st_size for f in dump.rglob("*") if f.is_file())
        result = bench(dump, args.runs, not args.no_cli)
    finally:
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)

    rows = result["rows"]
    print(f"dump: {dump} ({rows.get('processes', 0)} processes, "
          f"{rows.get('process_rounds', 0)} process-rounds, {size / 1e6:.0f} MB"
          + (f", built in {built:.1f} s" if built else "") + ")")
    print("rows: " + ", ".join(f"{k} {v:,}" for k, v in rows.items() if v))
    print(f"\nmedian of {args.runs} run(s)")
    print(f"{'step':<38}{'seconds':>9}   runs")
    for key, label in (("load", "load_dump"), ("analyze", "analyze"),
                       ("cli", "postmortem analyze DUMP --json")):
        value = result[key]
        if value is None:
            continue
        runs = ", ".join(f"{v:.2f}" for v in result["runs"][key])
        print(f"{label:<38}{value:>9.2f}   {runs}")
    verdict = result["verdict"]
    culprit = (verdict.get("culprit") or {}).get("role")
    print(f"\nverdict: {verdict.get('hang_class')}, culprit {culprit}")
    if truth is not None:
        found = (verdict.get("hang_class") == truth["hang_class"]
                 and culprit == truth["culprit_role"])
        print(f"expected: {truth['hang_class']}, culprit {truth['culprit_role']}: "
              + ("FOUND" if found else "MISSED"))
    if args.json:
        print(json.dumps({k: v for k, v in result.items() if k != "verdict"} | {
            "verdict": verdict, "truth": truth}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
