"""The flight recorder's file, where a job that runs `postmortem.recorder` keeps it.

Found, in order: among the process's open files (the recorder keeps `recorder.lock` open in
its directory for the life of the job); under `$POSTMORTEM_FLIGHT_DIR` from the process's
environment; under its temp directory's `postmortem-flight/`, named after its pid. Paths
are read through /proc/PID/root, so a job in another mount namespace (a container) is
read as it sees its own files.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MARKER = "recorder.lock"
FLIGHT_FILE = "flight.json"
LIMIT = 32 * 1024 * 1024


def _in_root(pid: int, path: str) -> str:
    return f"/proc/{pid}/root{path}" if path.startswith("/") else path


def find_dir(pid: int, open_files: list[dict[str, Any]], env: dict[str, str]) -> str | None:
    """The flight directory of a process, as a path readable from here; None if it has none."""
    for record in open_files:
        path = str(record.get("path") or "")
        if path.endswith("/" + MARKER):
            return _in_root(pid, os.path.dirname(path))
    bases = []
    if env.get("POSTMORTEM_FLIGHT_DIR"):
        bases.append(env["POSTMORTEM_FLIGHT_DIR"])
    tmp = env.get("TMPDIR") or "/tmp"
    bases.append(os.path.join(tmp, "postmortem-flight"))
    for base in bases:
        root = Path(_in_root(pid, base))
        try:
            found = [p for p in root.iterdir() if p.name.endswith(f"-{pid}") and p.is_dir()]
        except OSError:
            continue
        if found:
            return str(sorted(found)[-1])
    return None


def read(directory: str) -> bytes:
    """flight.json of a flight directory, bounded."""
    with open(os.path.join(directory, FLIGHT_FILE), "rb") as handle:
        data = handle.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise OSError(f"{FLIGHT_FILE} is larger than {LIMIT} bytes")
    return data
