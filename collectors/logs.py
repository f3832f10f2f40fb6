"""Log tails: the target's stdout/stderr when they are regular files, and --log files.

/proc/PID/fd/N is opened anew (its own file offset), so reading it never moves the
target's position in its own log.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from collectors.procfs import PROC

TAIL_BYTES = 256 * 1024


@dataclass(frozen=True)
class Tail:
    data: bytes
    start: int  # byte offset of data[0] in the file: lines are placed in time by offset
    end: int

    def to_json(self) -> dict[str, int]:
        return {"start": self.start, "end": self.end}


def tail(path: Path | str, limit: int = TAIL_BYTES) -> Tail:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        start = max(0, size - limit)
        handle.seek(start)
        data = handle.read(limit)
    if start > 0:
        # Drop the partial first line.
        cut = data.find(b"\n") + 1
        data, start = data[cut:], start + cut
    return Tail(data, start, start + len(data))


def size_of(path: Path | str) -> int:
    return os.stat(path).st_size


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
