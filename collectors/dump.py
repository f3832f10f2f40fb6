"""The dump directory: layout, manifest and atomic writes (standard library only).

The layout is documented in docs/dump-format.md; the loader (postmortem.load) is its
only reader. Every file is written to a temporary name and renamed, and the manifest is
rewritten after every round, so an interrupted capture still leaves a valid dump.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collectors.layout import FORMAT_NAME, MANIFEST, SCHEMA_VERSION, CollectorStatus, FailureKind
from postmortem import __version__
from postmortem.errors import OutputExistsError, UsageError

Seconds = float


@dataclass
class Outcome:
    """What one collector did for one target in one round."""

    target: str  # a pid, "host:port" of a TF server, a checkpoint dir, a log path
    collector: str
    status: CollectorStatus
    round: int | None = None
    reason: str = ""
    seconds: Seconds = 0.0
    files: list[str] = field(default_factory=list)
    kind: FailureKind = FailureKind.NONE

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["kind"] = self.kind.value
        return data


@dataclass
class RoundInfo:
    index: int
    started_at: Seconds
    ended_at: Seconds


def write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=False).encode())


def _is_dump(path: Path) -> bool:
    """Only a directory whose manifest is ours may be cleared by --force."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME


def prepare_output(path: Path, force: bool) -> None:
    """Refuse a non-empty output unless --force; never touch anything but a dump there."""
    if path.exists() and not path.is_dir():
        raise OutputExistsError(f"{path} exists and is not a directory.")
    if path.is_dir() and any(path.iterdir()):
        if not force:
            raise OutputExistsError(f"Output directory {path} is not empty.")
        if not _is_dump(path):
            raise UsageError(
                f"Refusing to clear {path}: it is not empty and is not a postmortem dump.",
                help_text="Pick an empty or new directory for -o.",
            )
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)


class DumpWriter:
    """Owns one dump directory while a capture runs."""

    def __init__(self, root: Path, command: list[str], options: dict[str, Any]) -> None:
        self.root = root
        self.manifest: dict[str, Any] = {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "tool_version": __version__,
            "host": socket.gethostname(),
            "started_at": time.time(),
            "ended_at": None,
            "complete": False,
            "command": command,
            "options": options,
            "targets": [],
            "rounds": [],
            "outcomes": [],
            "tf_servers": [],
            "checkpoint_dirs": [],
            "logs": [],
        }

    def path(self, relative: str) -> Path:
        return self.root / relative

    def write_bytes(self, relative: str, data: bytes) -> str:
        write_atomic(self.root / relative, data)
        return relative

    def write_json(self, relative: str, obj: Any) -> str:
        write_json_atomic(self.root / relative, obj)
        return relative

    def add_target(self, entry: dict[str, Any]) -> None:
        self.manifest["targets"].append(entry)

    def add_round(self, info: RoundInfo) -> None:
        self.manifest["rounds"].append(asdict(info))

    def add_outcome(self, outcome: Outcome) -> None:
        self.manifest["outcomes"].append(outcome.to_json())

    def flush(self, complete: bool = False) -> None:
        self.manifest["ended_at"] = time.time()
        self.manifest["complete"] = complete
        write_json_atomic(self.root / MANIFEST, self.manifest)
