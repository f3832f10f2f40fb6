"""What does the flight recorder cost a job? Step rate of a live local training job with and
without postmortem.recorder at its defaults, the cost of a traced step, and of a write.

    python benchmarks/recorder.py [--pairs 3] [--step-sleep 0.05] [--window 30]

Each pair starts two copies of `postmortem demo healthy-training`'s cluster (1 ps, 1 async
MonitoredTrainingSession worker, timestamped step lines) side by side, one without and one
with `recorder=true`, and measures both over the same window after a warm-up: the rate is
global steps per second between the first and the last step line of the window (their own
timestamps). Run side by side, the two share whatever else the host does; run one after the
other, separate clusters drift by +-5% on this VM, more than the effect. Then, from the
recorded runs' flight.json: the median duration of a traced step (RunOptions FULL_TRACE,
every 100th step and the first three) against an untraced one, and the CPU time of one
write of the flight file.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.harm import rate  # noqa: E402
from postmortem.recorder import FlightRecorder  # noqa: E402
from postmortem.scenarios import get_scenario  # noqa: E402


def one_pair(work: Path, step_sleep: float, warmup: float,
             window: float) -> tuple[float, float, dict[str, Any] | None]:
    """(rate without, rate with the recorder, the recorded worker's flight.json)."""
    scenario = get_scenario("healthy-training")
    base = {"step_sleep": step_sleep, "num_workers": 1, "log_format": "timestamped",
            "save_secs": 30.0}
    plain = scenario.start(work / "plain", **base, recorder=False)
    recorded = scenario.start(work / "recorded", **base, recorder=True)
    with plain, recorded:
        plain.wait_established(timeout=240)
        recorded.wait_established(timeout=240)
        time.sleep(warmup)
        start = time.time()
        time.sleep(window)
        end = time.time()
        without = rate(plain.log_text("worker:0"), start, end)
        with_recorder = rate(recorded.log_text("worker:0"), start, end)
        found = sorted((work / "recorded" / "flight").glob("worker-0-*/flight.json"))
        flight = json.loads(found[0].read_text()) if found else None
    return without, with_recorder, flight


def traced_cost(flight: dict[str, Any]) -> tuple[float, float, int]:
    """(median untraced step s, median traced step s, traced steps) past the first three."""
    steps = [s for s in flight["steps"][3:] if s[1] is not None]
    plain = [s[1] - s[0] for s in steps if not s[3]]
    traced = [s[1] - s[0] for s in steps if s[3]]
    if not plain or not traced:
        return float("nan"), float("nan"), len(traced)
    return statistics.median(plain), statistics.median(traced), len(traced)


def write_cost(flight: dict[str, Any], tmp: Path) -> float:
    """CPU seconds of one write of a full flight file (2000 steps, the traces kept)."""
    recorder = FlightRecorder(flight_dir=tmp / "w")
    recorder.dir.mkdir(parents=True)
    steps = flight["steps"] or [[0.0, 0.01, 1, False]]
    while len(recorder.steps) < recorder.steps.maxlen:  # type: ignore[operator]
        recorder.steps.extend(steps)
    recorder.traces.extend(flight["traces"])
    recorder.inventory = flight["inventory"]
    started = time.process_time()
    for _ in range(20):
        recorder._write()
    return (time.process_time() - started) / 20


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--step-sleep", type=float, default=0.05)
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--window", type=float, default=30.0)
    args = parser.parse_args()
    plain, recorded, ratios, flights = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="postmortem-recorder-bench-") as work:
        for pair in range(args.pairs):
            without, with_recorder, flight = one_pair(
                Path(work) / f"pair-{pair}", args.step_sleep, args.warmup, args.window)
            if flight is not None:
                flights.append(flight)
            plain.append(without)
            recorded.append(with_recorder)
            ratios.append(with_recorder / without)
            print(f"pair {pair}: without {without:.2f} steps/s, with {with_recorder:.2f} "
                  f"({100 * (1 - ratios[-1]):+.2f}% slowdown)", flush=True)
        write_s = write_cost(flights[-1], Path(work)) if flights else float("nan")
    slowdown = 100 * (1 - statistics.median(ratios))
    print(f"step sleep {args.step_sleep:g}s, {args.pairs} pairs of {args.window:g}s windows")
    print(f"without the recorder {', '.join(f'{r:.2f}' for r in plain)} steps/s")
    print(f"with the recorder    {', '.join(f'{r:.2f}' for r in recorded)} steps/s")
    print(f"slowdown, median of pairs: {slowdown:.2f}%")
    for flight in flights:
        base, traced, count = traced_cost(flight)
        print(f"untraced step {1e3 * base:.2f} ms, traced step {1e3 * traced:.2f} ms "
              f"({count} traced): a trace costs {1e3 * (traced - base):.2f} ms once per "
              f"{flight['trace_every_n_steps']} steps")
    print(f"one write of the flight file: {1e3 * write_s:.1f} ms of CPU (every 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
