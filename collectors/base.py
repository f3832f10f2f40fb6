"""What every per-process collector shares: the target and the failure it raises."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from collectors.dump import DumpWriter
from collectors.layout import FailureKind


@dataclass
class Target:
    """One live process being captured; `state` is refreshed before each round."""

    pid: int
    state: str | None = None
    gone: bool = False
    # One entry per py-spy read: {"round", "seconds" (paused), "nonblocking_reason"}.
    pauses: list[dict[str, Any]] = field(default_factory=list)
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)  # the allow-listed environment
    # Open regular files seen by the last procfs round: checkpoint-dir discovery reuses
    # them instead of walking /proc/PID/fd a second time.
    open_files: list[dict[str, Any]] = field(default_factory=list)
    # Its Python threads, as py-spy last saw them: the threads the watch follows.
    python_tids: list[int] = field(default_factory=list)
    # Its other threads worth a look at the start and end of the watch (in I/O, say).
    other_tids: list[int] = field(default_factory=list)
    # (file, line) of every frame whose source lines were kept, the numbers of the lines
    # kept per file, and its own lines of files that differ from the capture's shared
    # ones (another file at that path: its own sources.json).
    source_lines: set[tuple[str, int]] = field(default_factory=set)
    read_lines: dict[str, set[str]] = field(default_factory=dict)
    own_sources: dict[str, dict[str, str]] = field(default_factory=dict)


class CollectorFailure(Exception):
    """A collector could not do its work; `kind` lets the CLI pick the exit code."""

    def __init__(
        self, reason: str, kind: FailureKind = FailureKind.ERROR, files: list[str] | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind
        self.files = files or []


class ProcessCollector(Protocol):
    """Reads one process in one round and writes raw files into the dump."""

    name: str

    def collect(self, target: Target, round_index: int, out: DumpWriter) -> list[str]: ...
