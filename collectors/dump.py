"""The dump directory: layout, manifest and atomic writes (standard library only).

The layout is documented in docs/dump-format.md; the loader (postmortem.load) is its
only reader. Every file is written to a temporary name and renamed, and the manifest is
rewritten after every round, so an interrupted capture still leaves a valid dump.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from collectors.layout import (
    FORMAT_NAME,
    MANIFEST,
    SCHEMA_VERSION,
    SHARED_SOURCES,
    CollectorStatus,
    FailureKind,
)
from postmortem import __version__
from postmortem.errors import OutputExistsError, OutputUnwritableError, UsageError

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


GZ = ".gz"  # the suffix of a compressed file of the dump


def write_json_atomic(path: Path, obj: Any) -> None:
    # Compact: the manifest is rewritten every round, and a big capture's is megabytes.
    write_atomic(path, json.dumps(obj, separators=(",", ":")).encode())


def is_dump(path: Path) -> bool:
    """Only a directory whose manifest is ours may be replaced by --force."""
    try:
        with open(path / MANIFEST, "rb") as handle:
            manifest = json.loads(handle.read(64 * 1024 * 1024))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(manifest, dict) and manifest.get("format") == FORMAT_NAME


def unwritable(path: Path, exc: OSError) -> OutputUnwritableError:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        reason = "a name in the path is too long"
    return OutputUnwritableError(f"Cannot write the dump at {path}: {reason}.")


def blocked_by_a_file(path: Path) -> Path | None:
    """The nearest existing ancestor of `path` when it is not a directory (a file in the
    way of creating it), else None."""
    try:
        for parent in path.parents:
            if parent.exists():
                return None if parent.is_dir() else parent
    except OSError:
        return None
    return None


@dataclass
class OutputPlan:
    """Where a capture writes, and how it replaces an old dump without ever losing it.

    A new dump is written straight into an absent or empty directory. An existing dump is
    replaced only with --force, and only atomically: the new one is built beside it and
    swapped in when the capture ends, so a capture that fails leaves the old one whole.
    """

    final: Path
    build: Path
    replaces: bool
    created: bool = False  # the directory did not exist before

    @classmethod
    def prepare(cls, path: Path, force: bool) -> OutputPlan:
        if path.is_symlink():
            raise UsageError(
                f"-o {path} is a symbolic link.",
                help_text="Give the directory itself (or a new path), not a link to it.",
            )
        final = Path(os.path.abspath(path))
        try:
            exists = final.exists()
            if exists and not final.is_dir():
                raise OutputExistsError(
                    f"{final} exists and is not a directory.",
                    help_text="Give -o a new path or a directory (--force never replaces a file).",
                )
            occupied = exists and any(final.iterdir())
        except OSError as exc:
            raise unwritable(final, exc) from None
        if not occupied:
            in_the_way = next((p for p in final.parents if p.exists() and not p.is_dir()), None)
            if in_the_way is not None:
                raise OutputUnwritableError(
                    f"Cannot write the dump at {final}: {in_the_way} is a file, not a directory."
                )
            try:
                final.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise unwritable(final, exc) from None
            return cls(final, final, False, created=not exists)
        if not force:
            raise OutputExistsError(
                f"Output directory {final} is not empty.",
                help_text="Choose another path, or pass --force to replace a postmortem dump "
                "there (built beside it and swapped in when the capture ends).",
            )
        if not is_dump(final):
            raise UsageError(
                f"Refusing to replace {final}: it is not empty and is not a postmortem dump.",
                help_text="Pick an empty or new directory for -o.",
            )
        here = Path(os.path.abspath(os.getcwd()))
        if here == final or final in here.parents:
            raise UsageError(
                f"Refusing to replace {final}: it contains the current directory.",
                help_text="cd out of it first, or write the new dump elsewhere.",
            )
        try:
            build = Path(tempfile.mkdtemp(prefix=f".{final.name[:100]}.new-", dir=final.parent))
        except OSError as exc:
            raise unwritable(final.parent, exc) from None
        return cls(final, build, True)

    def commit(self) -> None:
        """Swap the new dump in; the old one is removed only once the new one is in place."""
        if not self.replaces:
            return
        old = Path(tempfile.mkdtemp(prefix=f".{self.final.name[:100]}.old-", dir=self.final.parent))
        os.rmdir(old)
        os.rename(self.final, old)
        try:
            os.rename(self.build, self.final)
        except OSError:
            os.rename(old, self.final)  # put the old one back
            raise
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """The capture produced nothing worth keeping: remove what it began."""
        if self.replaces or self.created:
            shutil.rmtree(self.build, ignore_errors=True)
            return
        # An empty directory the user gave: take back what this capture put in it.
        try:
            entries = list(self.final.iterdir())
        except OSError:
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


class DumpWriter:
    """Owns one dump directory while a capture runs."""

    def __init__(
        self, root: Path, command: list[str], options: dict[str, Any], compress: bool = False
    ) -> None:
        self.root = root
        # Every file but the manifest gzipped (a capture of many processes: JSON shrinks
        # ~8x); the loader reads NAME.gz where NAME is missing.
        self.compress = compress
        self._lock = threading.Lock()
        self._claimed: dict[Any, Any] = {}
        # Source lines around every frame seen, by file and line, for every target at
        # once: a thousand processes of one job run the same code (sources.json).
        self.sources: dict[str, dict[str, str]] = {}
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
        """Write a file of the dump; returns the name it has (`.gz` added when the capture
        compresses)."""
        if self.compress:
            data, relative = gzip.compress(data, compresslevel=6, mtime=0), relative + GZ
        write_atomic(self.root / relative, data)
        return relative

    def write_json(self, relative: str, obj: Any) -> str:
        return self.write_bytes(relative, json.dumps(obj, separators=(",", ":")).encode())

    def claim(self, key: Any, owner: Any) -> bool:
        """True for the first owner to claim `key` in this capture, and for that owner
        again: what one target writes for all (the host's listening addresses, once per
        round and network namespace; its file may be written twice, after a timeout)."""
        with self._lock:
            return bool(self._claimed.setdefault(key, owner) == owner)

    def add_sources(
        self,
        lines: dict[str, dict[str, str]],
        keep: dict[str, dict[str, str]],
        earlier: dict[str, set[str]],
    ) -> str:
        """Merge a target's new source lines into the capture's shared sources.json; the
        shared file's name when it was written now, else "".

        `keep` is the target's own lines, by file: a file it has there (its file at that
        path differs from the one the shared lines came from: another mount namespace)
        takes all of its lines, and a file whose new lines differ from the shared ones
        moves there, with the shared lines it had read alike in earlier rounds (`earlier`:
        their numbers, by file); the loader then reads that file from the target's lines
        alone, never mixing two files' lines."""
        with self._lock:
            changed = False
            for filename, numbered in lines.items():
                if filename in keep:
                    keep[filename].update(numbered)
                    continue
                shared = self.sources.setdefault(filename, {})
                if any(shared.get(n, text) != text for n, text in numbered.items()):
                    before = earlier.get(filename, set())
                    keep[filename] = {n: shared[n] for n in before if n in shared}
                    keep[filename].update(numbered)
                    continue
                for number, text in numbered.items():
                    if number not in shared:
                        shared[number] = text
                        changed = True
            # Under the lock: the last write holds every line.
            return self.write_json(SHARED_SOURCES, self.sources) if changed else ""

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


def gzip_dump(root: Path, keep: tuple[str, ...] = (MANIFEST, "truth.json")) -> int:
    """Compress a plain dump in place as a capture of many processes writes it: every file
    but the manifest gzipped (NAME -> NAME.gz), the manifest's file names updated. Returns
    how many files were compressed."""
    count = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(root).as_posix()
        if relative in keep or relative.endswith(GZ):
            continue
        write_atomic(path.with_name(path.name + GZ), gzip.compress(path.read_bytes(), 6, mtime=0))
        path.unlink()
        count += 1
    manifest_path = root / MANIFEST
    manifest = json.loads(manifest_path.read_text())
    for outcome in manifest.get("outcomes") or []:
        if isinstance(outcome, dict) and isinstance(outcome.get("files"), list):
            outcome["files"] = [f + GZ if isinstance(f, str) and not f.endswith(GZ) else f
                                for f in outcome["files"]]
    options = manifest.setdefault("options", {})
    if isinstance(options, dict):
        options["compress"] = True
    write_json_atomic(manifest_path, manifest)
    return count
