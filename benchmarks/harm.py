"""Does a capture slow the job it captures? Step rate of a live training job with and
without `postmortem capture --samples 10 --interval 1` running against all its processes.

    python benchmarks/harm.py [--pairs 3] [--step-sleep 0] [--workers 2] [--all-threads]

Starts a healthy local job (`postmortem demo healthy-training`'s cluster: 1 ps, async
MonitoredTrainingSession workers), then alternates windows: a quiet window of the length a
capture takes, then a capture window. The global step is read from the chief's timestamped
log; the rate of a window is its steps over its seconds. Prints the median rate of quiet
and captured windows and the slowdown. Alternating cancels slow drift (warm-up, caches).
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from postmortem.scenarios import get_scenario  # noqa: E402

STEP = re.compile(
    r"^(\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}),(\d{3}) .*INFO step \d+ global_step (\d+)", re.M
)


def steps(log: str) -> list[tuple[float, int]]:
    out = []
    for stamp, millis, step in STEP.findall(log):
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S").timestamp() + int(millis) / 1000
        out.append((moment, int(step)))
    return out


def rate(log: str, start: float, end: float) -> float:
    """Global steps per second between two moments, from the step lines inside them."""
    inside = [(t, s) for t, s in steps(log) if start <= t <= end]
    if len(inside) < 2:
        return float("nan")
    (t0, s0), (t1, s1) = inside[0], inside[-1]
    return (s1 - s0) / (t1 - t0)


def capture(pids: list[int], out: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the capture and its tools)."""
    argv = [sys.executable, "-m", "postmortem", "capture", "-o", str(out), "--force",
            "--samples", "10", "--interval", "1", *extra]
    for pid in pids:
        argv += ["--pid", str(pid)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    subprocess.run(argv, capture_output=True, check=True, timeout=600, cwd=REPO)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.time() - started, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--step-sleep", type=float, default=0.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--all-threads", action="store_true")
    parser.add_argument("--watch-stacks", action="store_true")
    args = parser.parse_args()
    scenario = get_scenario("healthy-training")
    with tempfile.TemporaryDirectory(prefix="postmortem-harm-") as work:
        params = {"step_sleep": args.step_sleep, "num_workers": args.workers,
                  "log_format": "timestamped", "save_secs": 30.0}
        with scenario.start(Path(work), **params) as run:
            run.wait_established(timeout=240)
            time.sleep(10)  # past warm-up
            pids = list(run.pids.values())
            quiet, captured, cpus = [], [], []
            window = 12.0
            extra = ["--all-threads"] if args.all_threads else []
            extra += ["--watch-stacks"] if args.watch_stacks else []
            for _ in range(args.pairs):
                start = time.time()
                time.sleep(window)
                quiet.append(rate(run.log_text("worker:0"), start, time.time()))
                start = time.time()
                window, cpu = capture(pids, Path(work) / "dump", extra)
                cpus.append(cpu)
                captured.append(rate(run.log_text("worker:0"), start, time.time()))
    base, busy = statistics.median(quiet), statistics.median(captured)
    mode = " ".join(extra) or "default"
    print(f"capture {mode}, {args.workers} workers, step sleep {args.step_sleep:g}s")
    print(f"quiet windows    {', '.join(f'{r:.1f}' for r in quiet)} steps/s, median {base:.1f}")
    print(f"captured windows {', '.join(f'{r:.1f}' for r in captured)} steps/s, "
          f"median {busy:.1f}")
    print(f"slowdown {100 * (base - busy) / base:.1f}% (capture window {window:.1f}s, "
          f"the capture's own CPU {statistics.median(cpus):.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
