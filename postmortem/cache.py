"""The analysis of a dump, kept for the next command on the same dump.

On call, one dump is read several times: `analyze`, then `report`, then `analyze --json`
for a script. Each would load and analyze the whole dump again (9 s for 1,000 processes).
The first command that took long keeps its incident in the user's cache directory; the
next one on the same dump, with the same postmortem, reads it back.

* Where: `$POSTMORTEM_CACHE_DIR`, else `$XDG_CACHE_HOME/postmortem`, else
  `~/.cache/postmortem`. `POSTMORTEM_CACHE=off` turns it off. Never inside a dump: a dump
  is mailed around, and what is kept here is a pickle, which only its writer may read.
* The same dump: the key hashes the dump's real path and every entry under it (name,
  mode, size, mtime, ctime, inode, device; links are not followed, at most
  MAX_DUMP_ENTRIES), and the postmortem code that analyzed it (its version and every
  module's content). A file changed, added or removed (ctime moves even when a copy
  sets the mtime back), or another postmortem, is another key. The key is taken again
  after the analysis: a dump that changed meanwhile (a capture still writing) is not kept.
  A kept analysis read back names the dump by the path given this time.
* Only the user's own: the directory (not a link) and each file must belong to the user
  and be writable by no one else, or the cache is not read (the command analyzes as if it
  were empty). A file that cannot be read back is removed and the dump analyzed again.
  Keeping is a favour: whatever fails there, the command has done its work.
* Bounded: only analyses that took at least MIN_SECONDS are kept (a small dump is quicker
  to analyze than to look up), at most MAX_ENTRIES files and MAX_BYTES together, the
  oldest removed first.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from postmortem.model import Incident

FORMAT = 1
MIN_SECONDS = 1.0
MAX_ENTRIES = 8
MAX_BYTES = 2 << 30
MAX_DUMP_ENTRIES = 1_000_000
SUFFIX = ".incident.pickle"
STALE_TMP_S = 600.0  # a half-written file this old was left by a command that was killed
OFF = ("0", "off", "no", "false")


def directory() -> Path | None:
    """Where analyses are kept, or None when the cache is off."""
    if os.environ.get("POSTMORTEM_CACHE", "").strip().lower() in OFF:
        return None
    chosen = os.environ.get("POSTMORTEM_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "postmortem"


def analysis(path: Path) -> tuple[Incident, Callable[[], None]]:
    """The incident of the dump at `path`, and a function that keeps it for the next command
    (a no-op when it came from the cache, or was quick). Call that after the output is out:
    the user reads the verdict while it writes."""
    from postmortem import analyze, load

    where = directory()
    key = dump_key(path) if where is not None else None
    if where is not None and key is not None:
        kept = _read(where, key)
        if kept is not None:  # the same dump, maybe named by another path this time
            return replace(kept, dump=replace(kept.dump, path=str(Path(path)))), _nothing
    started = time.perf_counter()
    incident = analyze(load(path))
    took = time.perf_counter() - started
    if where is None or key is None or took < MIN_SECONDS:
        return incident, _nothing

    def keep() -> None:
        try:
            if dump_key(path) == key:  # nothing changed while it was analyzed
                _write(where, key, incident)
        except Exception:  # noqa: BLE001 - keeping it is a favour: never fail the command
            pass

    return incident, keep


def _nothing() -> None:
    return None


_CODE: str | None = None


def code_key() -> str:
    """The postmortem that analyzes: its version, and every module's content (an edited
    checkout is another postmortem, whatever its files' times say)."""
    global _CODE
    if _CODE is None:
        import collectors
        import postmortem

        digest = hashlib.sha256(f"{FORMAT} {postmortem.__version__} {sys.version}".encode())
        for package in (postmortem, collectors):
            root = Path(str(package.__file__)).parent
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames.sort()
                for name in sorted(filenames):
                    if name.endswith(".py"):
                        file = os.path.join(dirpath, name)
                        digest.update(os.fsencode(os.path.relpath(file, root)) + b"\0")
                        with open(file, "rb") as handle:
                            digest.update(hashlib.sha256(handle.read()).digest())
        _CODE = digest.hexdigest()
    return _CODE


def dump_key(path: Path) -> str | None:
    """A hash of the dump as it is now, or None when it cannot be walked whole."""
    try:
        root = os.path.realpath(path)
        digest = hashlib.sha256(code_key().encode() + b"\n" + os.fsencode(root) + b"\n")
        count = 0
        pending = [""]
        while pending:
            relative = pending.pop()
            with os.scandir(os.path.join(root, relative) if relative else root) as entries:
                listed = sorted(entries, key=lambda e: e.name)
            lines = []
            for entry in listed:  # links are not followed
                info = entry.stat(follow_symlinks=False)
                name = f"{relative}/{entry.name}" if relative else entry.name
                lines.append(  # ctime: no utime() can set it back
                    f"{name}\0{info.st_mode} {info.st_size} {info.st_mtime_ns} "
                    f"{info.st_ctime_ns} {info.st_ino} {info.st_dev}\n"
                )
                if stat.S_ISDIR(info.st_mode):
                    pending.append(name)
            count += len(lines)
            if count > MAX_DUMP_ENTRIES:
                return None
            digest.update("".join(lines).encode(errors="surrogateescape"))
        return digest.hexdigest()
    except (OSError, ValueError):
        return None


def _private(info: os.stat_result) -> bool:
    return info.st_uid == os.geteuid() and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _own_directory(where: Path) -> bool:
    """The cache directory itself, not a link to one: a link planted in a shared place
    would send the user's analyses, and the pruning, elsewhere."""
    info = os.lstat(where)
    return stat.S_ISDIR(info.st_mode) and _private(info)


def _read(where: Path, key: str) -> Incident | None:
    from postmortem.model import Incident

    file = where / f"{key}{SUFFIX}"
    try:
        if not _own_directory(where):
            return None
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or not _private(info):
                return None
            kept = pickle.load(handle)
    except Exception:  # noqa: BLE001 - a broken cache file: analyze again, remove it
        _remove(file)
        return None
    if (
        not isinstance(kept, tuple)
        or len(kept) != 3
        or kept[:2] != (FORMAT, key)
        or not isinstance(kept[2], Incident)
    ):
        _remove(file)
        return None
    try:
        os.utime(file)  # the most recently used is the last removed
    except OSError:
        pass
    return kept[2]


def _write(where: Path, key: str, incident: Incident) -> None:
    """Keep it, if the cache directory is the user's own; a failure only means no cache."""
    tmp = None
    try:
        where.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not _own_directory(where):
            return
        fd, tmp = tempfile.mkstemp(prefix=".", suffix=".tmp", dir=where)
        with os.fdopen(fd, "wb") as handle:
            pickle.dump((FORMAT, key, incident), handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, where / f"{key}{SUFFIX}")
        tmp = None
        _prune(where)
    except (OSError, pickle.PicklingError, RecursionError):
        pass
    finally:
        if tmp is not None:
            _remove(Path(tmp))


def _prune(where: Path) -> None:
    entries = []
    now = time.time()
    for entry in os.scandir(where):
        if not entry.is_file(follow_symlinks=False):
            continue
        info = entry.stat(follow_symlinks=False)
        if entry.name.endswith(SUFFIX):
            entries.append((info.st_mtime, info.st_size, Path(entry.path)))
        elif entry.name.startswith(".") and entry.name.endswith(".tmp"):
            if now - info.st_mtime > STALE_TMP_S:  # a write that was killed
                _remove(Path(entry.path))
    entries.sort(reverse=True)  # newest first
    total = 0
    for index, (_mtime, size, file) in enumerate(entries):
        total += size
        if index >= MAX_ENTRIES or total > MAX_BYTES:
            _remove(file)


def _remove(file: Path) -> None:
    try:
        file.unlink()
    except OSError:
        pass
