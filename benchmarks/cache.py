"""The first command on a dump, and the next ones (postmortem.cache).

    python benchmarks/cache.py --dump DIR [--runs 3]

Each a subprocess, as a user runs them, the dump in the page cache:

* `analyze --json` with the cache off (every run loads and analyzes);
* the first `analyze --json` with an empty cache (it loads, analyzes, and keeps the
  analysis);
* the next `analyze --json`, and `report`, which read the kept analysis.

Prints the median of --runs of each, and the size of the kept analysis.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "postmortem", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dump", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="postmortem-bench-cache-"))
    where = work / "cache"
    on = {**os.environ, "POSTMORTEM_CACHE": "on", "POSTMORTEM_CACHE_DIR": str(where)}
    off = {**os.environ, "POSTMORTEM_CACHE": "off"}
    analyze = ["analyze", str(args.dump), "--json"]
    report = ["report", str(args.dump), "-o", str(work / "report.html"), "--force"]
    figures: dict[str, list[float]] = {"off": [], "first": [], "next": [], "report": []}
    try:
        for _ in range(args.runs):
            figures["off"].append(run(analyze, off))
            shutil.rmtree(where, ignore_errors=True)
            figures["first"].append(run(analyze, on))
            figures["next"].append(run(analyze, on))
            figures["report"].append(run(report, on))
        kept = sum(f.stat().st_size for f in where.glob("*.pickle"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"dump: {args.dump}; kept analysis: {kept / 1e6:.1f} MB")
    print(f"median of {args.runs} run(s)")
    for key, label in (("off", "analyze --json, cache off"),
                       ("first", "analyze --json, first (keeps it)"),
                       ("next", "analyze --json, next"),
                       ("report", "report, next")):
        runs = ", ".join(f"{v:.2f}" for v in figures[key])
        print(f"{label:<36}{statistics.median(figures[key]):>7.2f} s   {runs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
