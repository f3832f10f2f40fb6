"""Run the external attach tools (py-spy, pystack, gdb) with bounded time.

py-spy can print an error and still exit 0 (e.g. "Failed to suspend process" on a
stopped target), so failures are read from the output, not only the exit code.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from collectors.layout import FailureKind

T = TypeVar("T")


@dataclass(frozen=True)
class ToolRun:
    argv: list[str]
    returncode: int | None  # None: killed on timeout
    stdout: bytes
    stderr: bytes
    seconds: float
    interrupted: bool = False  # killed by stop_all() (Ctrl-C), or never started after it

    @property
    def timed_out(self) -> bool:
        return self.returncode is None and not self.interrupted


def find_tool(name: str) -> str | None:
    """The tool installed beside this interpreter (the version postmortem depends on), else
    the one on PATH.

    Beside-first also skips launcher shims (pyenv's cost ~70 ms per call, more than the
    dump itself). os.access, not Path.exists: an unprivileged user may not even stat the
    interpreter's directory (Path.exists raises PermissionError there).
    POSTMORTEM_PY_SPY / POSTMORTEM_PYSTACK / POSTMORTEM_GDB name a binary explicitly (a
    py-spy with file capabilities, say); a wrong one counts as missing.
    """
    override = os.environ.get("POSTMORTEM_" + name.upper().replace("-", "_"))
    if override is not None:
        return override if os.access(override, os.X_OK) else None
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


# Tool processes still running, so Ctrl-C can end them at once instead of waiting for
# each attach to finish (a pystack or gdb run takes seconds).
_running: set[subprocess.Popen[bytes]] = set()
_running_lock = threading.Lock()
_stopping = threading.Event()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all() -> None:
    """Kill every running tool's process group and refuse to start new ones."""
    _stopping.set()
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        _kill_group(proc)


def reset_stop() -> None:
    """Allow tools to run again (a new capture in the same process, e.g. tests)."""
    _stopping.clear()


def run_bounded(
    argv: list[str], timeout: float, deadline: Callable[[], float | None] | None = None
) -> ToolRun:
    """Run a tool in its own process group; on timeout kill the group, wait bounded.

    Its own session also keeps a terminal's Ctrl-C from reaching it: the capture decides
    what to stop, and in which order. `deadline`, when given, is asked while the tool runs
    for a tighter monotonic deadline (a phase of the tool's work has begun), or None.
    """
    started = time.monotonic()
    if _stopping.is_set():
        return ToolRun(argv, None, b"", b"not started: capture interrupted", 0.0, True)
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    with _running_lock:
        _running.add(proc)
    try:
        try:
            out, err = _communicate(proc, started + timeout, deadline)
            code: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                out, err = b"", b""
            code = None
    finally:
        with _running_lock:
            _running.discard(proc)
    interrupted = _stopping.is_set()
    if interrupted:
        code = None
    return ToolRun(argv, code, out, err, time.monotonic() - started, interrupted)


def _communicate(
    proc: subprocess.Popen[bytes], limit: float, deadline: Callable[[], float | None] | None
) -> tuple[bytes, bytes]:
    if deadline is None:
        return proc.communicate(timeout=max(0.0, limit - time.monotonic()))
    while True:
        tighter = deadline()
        end = min(limit, tighter) if tighter is not None else limit
        try:
            # Output is kept across retries of communicate() (subprocess's contract).
            return proc.communicate(timeout=max(0.0, min(0.2, end - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= end:
                raise


# Phrases py-spy and pystack print for the failures we tell apart.
PERMISSION_MARKERS = ("permission denied", "operation not permitted", "eperm", "ptrace_scope")
NOT_PYTHON_MARKERS = (
    "failed to find python version",
    "failed to find a python interpreter",
    "couldn't find python",
    "not a python process",
    "failed to get python version",
)
GONE_MARKERS = (
    "no such process",
    "no such file or directory",
    "process not found",
    "esrch",
    "failed to get process executable name",  # py-spy 0.4 on a pid that is gone
    "check that the process is running",
)
# py-spy (blocking mode) on a process that is stopped (SIGSTOP): retry with --nonblocking.
SUSPEND_FAILED_MARKER = "failed to suspend process"


def classify_failure(text: str) -> FailureKind:
    """What a tool's error text says went wrong: permission, not Python, exited, or other."""
    lowered = text.lower()
    if any(m in lowered for m in PERMISSION_MARKERS):
        return FailureKind.PERMISSION
    if any(m in lowered for m in NOT_PYTHON_MARKERS):
        return FailureKind.NOT_PYTHON
    if any(m in lowered for m in GONE_MARKERS):
        return FailureKind.EXITED
    return FailureKind.ERROR


class BoundedCallTimeout(Exception):
    pass


def call_bounded(fn: Callable[[], T], timeout: float) -> T:
    """Run fn in a daemon thread: a read stuck on a hung filesystem must not stall us.

    A thread stuck in the kernel cannot be cancelled; it is left behind and dies with
    the process.
    """
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True, name="postmortem-bounded-read")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise BoundedCallTimeout(f"did not return within {timeout:.0f}s")
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]
