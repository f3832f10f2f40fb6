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
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ToolRun:
    argv: list[str]
    returncode: int | None  # None: killed on timeout
    stdout: bytes
    stderr: bytes
    seconds: float

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def find_tool(name: str) -> str | None:
    """A tool on PATH, or installed beside this interpreter (a venv not on PATH)."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else None


def run_bounded(argv: list[str], timeout: float) -> ToolRun:
    """Run a tool in its own process group; on timeout kill the group, wait bounded."""
    started = time.monotonic()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = b"", b""
        code = None
    return ToolRun(argv, code, out, err, time.monotonic() - started)


# Phrases py-spy and pystack print for the failures we tell apart.
PERMISSION_MARKERS = ("permission denied", "operation not permitted", "eperm", "ptrace_scope")
NOT_PYTHON_MARKERS = (
    "failed to find python version",
    "failed to find a python interpreter",
    "couldn't find python",
    "not a python process",
    "failed to get python version",
)
GONE_MARKERS = ("no such process", "no such file or directory", "process not found", "esrch")


def classify_failure(text: str) -> str:
    """One of: permission, not-python, gone, error."""
    lowered = text.lower()
    if any(m in lowered for m in PERMISSION_MARKERS):
        return "permission"
    if any(m in lowered for m in NOT_PYTHON_MARKERS):
        return "not-python"
    if any(m in lowered for m in GONE_MARKERS):
        return "gone"
    return "error"
