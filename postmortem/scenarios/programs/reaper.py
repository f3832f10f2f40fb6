"""Safety net for a scenario run: cleans up if the harness dies without cleaning up.

Started by the harness in its own session. Every 0.5 s it checks that its parent (the
harness) is still alive. If the parent is gone (killed hard: SIGKILL, OOM, a CI timeout),
it does what the harness's exit would have done, in the same order: SIGKILL the FUSE
daemon's process group, lazily unmount, then SIGKILL every other process group listed in
--registry. Lines of the registry: "fuse PGID MOUNTPOINT" or "proc PGID". A process group
is only signalled if its leader's command line names --workdir (no pid reuse accidents).
Standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time


def ours(pgid: int, workdir: str) -> bool:
    try:
        with open(f"/proc/{pgid}/cmdline", "rb") as f:
            return workdir.encode() in f.read()
    except OSError:
        return False


def kill_group(pgid: int, workdir: str) -> None:
    if ours(pgid, workdir):
        with contextlib.suppress(OSError):
            os.killpg(pgid, signal.SIGKILL)


def clean(registry: str, workdir: str) -> None:
    try:
        with open(registry) as f:
            entries = [line.split() for line in f if line.strip()]
    except OSError:
        return
    for e in entries:
        if e[0] == "fuse":
            kill_group(int(e[1]), workdir)
    time.sleep(0.2)
    for e in entries:
        if e[0] == "fuse":
            for argv in (["fusermount3", "-u", "-z", e[2]], ["umount", "-l", e[2]]):
                with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                    subprocess.run(argv, capture_output=True, timeout=15, check=False)
    for e in entries:
        if e[0] == "proc":
            kill_group(int(e[1]), workdir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--registry", required=True)
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    while os.getppid() == args.parent:
        time.sleep(0.5)
    print(f"harness {args.parent} is gone: cleaning up {args.workdir}", flush=True)
    clean(args.registry, args.workdir)


if __name__ == "__main__":
    main()
