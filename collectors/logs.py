"""Log tails: the target's stdout/stderr when they are regular files, and --log files.

/proc/PID/fd/N is opened anew (its own file offset), so reading it never moves the
target's position in its own log.
"""

from __future__ import annotations

import os
from pathlib import Path

from collectors.procfs import PROC

TAIL_BYTES = 256 * 1024


def tail(path: Path | str, limit: int = TAIL_BYTES) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - limit))
        data = handle.read(limit)
    if size > limit:
        # Drop the partial first line.
        data = data.split(b"\n", 1)[-1]
    return data


def std_stream_files(pid: int) -> dict[str, str]:
    """stdout/stderr of a process that point at regular files: name -> resolved path."""
    streams = {}
    for fd, name in ((1, "stdout"), (2, "stderr")):
        link = PROC / str(pid) / "fd" / str(fd)
        try:
            if link.is_file():
                streams[name] = os.readlink(link)
        except OSError:
            continue
    return streams
