"""Process plumbing for scenarios: free ports, spawning in own sessions, /proc reads, logs.

Standard library only. Every process is started with start_new_session=True, so its
pid is also its process group id; signals go to that group and to nothing else.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PROGRAMS_DIR = Path(__file__).resolve().parent / "programs"


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (bound together, then released)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Spawned:
    """One process we started: its role name, Popen handle and log files."""

    role: str
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    argv: list[str] = field(default_factory=list)
    killed: bool = False  # SIGKILLed by the fault, on purpose
    may_exit: bool = False  # its exit is the scenario's outcome (a TF2 job that crashes)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        """Running or stopped; False once exited (zombie or reaped)."""
        if self.popen.poll() is not None:
            return False
        return proc_state(self.pid) not in (None, "Z", "X")


def spawn(
    role: str,
    argv: Sequence[str],
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> Spawned:
    """Start argv in its own session, stdout/stderr to regular files in log_dir."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = role.replace(":", "-")
    out_path, err_path = log_dir / f"{stem}.stdout.log", log_dir / f"{stem}.stderr.log"
    full_env = dict(os.environ)
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "0")
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        popen = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=full_env,
            start_new_session=True,
            close_fds=True,
        )
    return Spawned(role, popen, out_path, err_path, list(argv))


def python_program(name: str, *args: str) -> list[str]:
    return [sys.executable, "-u", str(PROGRAMS_DIR / name), *args]


def signal_group(proc: Spawned, sig: int) -> None:
    """Signal proc's process group, only while its leader is unreaped (so the id is ours)."""
    if proc.popen.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def terminate_all(
    procs: Sequence[Spawned],
    grace: float = 3.0,
    reap_timeout: float = 10.0,
) -> list[str]:
    """SIGTERM (plus SIGCONT for stopped ones) each group, then SIGKILL; reap, bounded.

    Returns the roles that could not be reaped (should be empty).
    """
    for p in procs:
        signal_group(p, signal.SIGTERM)
        signal_group(p, signal.SIGCONT)
    deadline = time.monotonic() + grace
    for p in procs:
        _reap(p, deadline - time.monotonic())
    for p in procs:
        signal_group(p, signal.SIGKILL)
    deadline = time.monotonic() + reap_timeout
    return [p.role for p in procs if not _reap(p, max(0.1, deadline - time.monotonic()))]


def _reap(proc: Spawned, timeout: float) -> bool:
    try:
        proc.popen.wait(timeout=max(0.0, timeout))
    except subprocess.TimeoutExpired:
        return False
    return True


def proc_state(pid: int, tid: int | None = None) -> str | None:
    """Kernel state letter (R, S, D, T, t, Z, ...) of a process or thread; None if gone."""
    path = f"/proc/{pid}/stat" if tid is None else f"/proc/{pid}/task/{tid}/stat"
    try:
        with open(path) as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rindex(")") + 2 :].split()[0]


@dataclass(frozen=True)
class ThreadState:
    tid: int
    comm: str
    state: str
    wchan: str


def threads(pid: int) -> Iterator[ThreadState]:
    try:
        tids = sorted(int(t) for t in os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return
    for tid in tids:
        base = f"/proc/{pid}/task/{tid}"
        try:
            with open(f"{base}/comm") as f:
                comm = f.read().strip()
            with open(f"{base}/wchan") as f:
                wchan = f.read().strip()
        except OSError:
            continue
        state = proc_state(pid, tid)
        if state is not None:
            yield ThreadState(tid, comm, state, wchan)


def read_text(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(read_text(path).splitlines()[-lines:])


def wait_until(predicate: Callable[[], T], timeout: float, poll: float = 0.2) -> T | None:
    """Poll predicate until it returns something truthy; return it, or None on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll)


def mounted(mountpoint: Path) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mounts") as f:
            return any(line.split()[1] == target for line in f)
    except OSError:
        return False
