"""How long one capture round takes over 1, 4 and 16 live Python processes.

    python benchmarks/capture.py [--runs 3] [--counts 1,4,16] [--threads 0,8] [--native]

For each (process count, threads per process) it starts that many sleeping Python
targets, runs `postmortem capture --samples 1` over all of them `--runs` times, and
prints the medians of: the round's wall time (manifest rounds[0].ended_at - started_at),
the whole command (process start to exit, imports included), and the longest pause any
one target saw (manifest `pauses`: py-spy's time attached to it). Target: one round over
16 processes in under 1 s without --native.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET = """
import sys, threading, time
for i in range(int(sys.argv[1])):
    threading.Thread(target=time.sleep, args=(3600,), name=f"idle-{i}", daemon=True).start()
print("ready", flush=True)
time.sleep(3600)
"""


def start_targets(count: int, threads: int) -> list[subprocess.Popen[str]]:
    procs = [subprocess.Popen([sys.executable, "-c", TARGET, str(threads)],
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
             for _ in range(count)]
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def stop_targets(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    for proc in procs:
        proc.wait(timeout=10)


def one_capture(pids: list[int], native: bool, workdir: Path) -> tuple[float, float, float]:
    """(round seconds, command seconds, longest pause) of one `--samples 1` capture."""
    dump = Path(tempfile.mkdtemp(dir=workdir)) / "dump"
    argv = [sys.executable, "-m", "postmortem", "capture", "--samples", "1", "-o", str(dump)]
    for pid in pids:
        argv += ["--pid", str(pid)]
    if native:
        argv.append("--native")
    started = time.monotonic()
    result = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    command = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"capture failed ({result.returncode}):\n{result.stderr}")
    manifest = json.loads((dump / "manifest.json").read_text())
    [round_info] = manifest["rounds"]
    pause = max(read["seconds"] for reads in manifest["pauses"].values() for read in reads)
    return round_info["ended_at"] - round_info["started_at"], command, pause


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--counts", default="1,4,16")
    parser.add_argument("--threads", default="0,8", help="extra threads per target")
    parser.add_argument("--native", action="store_true")
    args = parser.parse_args()
    print(f"{'procs':>5} {'threads':>7} {'round s':>8} {'command s':>9} {'max pause s':>11}")
    with tempfile.TemporaryDirectory() as workdir:
        for threads in map(int, args.threads.split(",")):
            for count in map(int, args.counts.split(",")):
                procs = start_targets(count, threads)
                try:
                    runs = [one_capture([p.pid for p in procs], args.native, Path(workdir))
                            for _ in range(args.runs)]
                finally:
                    stop_targets(procs)
                rnd, cmd, pause = (statistics.median(col) for col in zip(*runs, strict=True))
                print(f"{count:>5} {threads + 1:>7} {rnd:>8.3f} {cmd:>9.3f} {pause:>11.3f}",
                      flush=True)


if __name__ == "__main__":
    main()
