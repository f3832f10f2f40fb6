"""Reading an untrusted dump: only regular files inside it, each read bounded.

A dump is mailed around and attached to incidents; whoever made it may have put a symlink
to /etc/shadow, a FIFO, /dev/zero, or JSON nested 200,000 deep where a file should be.
Every read of a dump goes through `DumpReader`, which resolves the path, refuses anything
that leaves the dump directory or is not a regular file, reads at most a size limit, and
turns every failure into a problem row (file, what is wrong) instead of an exception.
"""

from __future__ import annotations

import json
import os
import stat
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

orjson: Any
try:  # ~5x faster on the MBs of JSON a big dump holds; the standard library otherwise
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; a missing one is not fatal
    orjson = None

MIB = 1024 * 1024
MANIFEST_LIMIT = 256 * MIB
JSON_LIMIT = 64 * MIB
TEXT_LIMIT = 32 * MIB


class NotReadable(Exception):
    """A dump file that cannot be used; the message says why, in words."""


GZ = ".gz"


def _gunzip(data: bytes, limit: int) -> bytes:
    """Decompressed, at most `limit` bytes: a small file that inflates to gigabytes (a
    decompression bomb) is refused as too large, never inflated."""
    inflate = zlib.decompressobj(wbits=31)  # gzip framing
    try:
        out = inflate.decompress(data, limit + 1)
    except zlib.error as exc:
        raise NotReadable(f"corrupt: not gzip data ({exc})") from exc
    if len(out) > limit or inflate.unconsumed_tail:
        raise NotReadable(f"too large (more than {limit:,} bytes once decompressed)")
    return out


def loads(data: bytes) -> Any:
    """JSON from a dump file; NotReadable, saying why, for anything that is not JSON."""
    if orjson is not None:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            pass  # NaN, a lone surrogate...: what the standard library accepts, it reads
    try:
        return json.loads(data)
    except RecursionError as exc:
        raise NotReadable("corrupt: JSON nested too deeply") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise NotReadable(f"corrupt: {exc}") from exc


LISTING_LIMIT = 1_000_000  # names of one directory kept in memory
MAX_DEPTH = 32  # directories below the root resolved step by step; deeper ones in full


@dataclass
class DumpReader:
    root: Path
    problems: list[dict[str, Any]] = field(default_factory=list)
    read: set[str] = field(default_factory=set)  # relative paths read successfully

    def __post_init__(self) -> None:
        self.real_root = os.path.realpath(self.root)
        self._real_dirs: dict[str, str] = {"": self.real_root}  # relative dir -> real path
        # relative dir -> {name: is a symlink}, listed once (None: could not be listed): a
        # round's files that were not written (a watch, a native stack) are known missing
        # without a failed open each, and a name needs no lstat to know it is no link.
        self._listed: dict[str, dict[str, bool] | None] = {}

    # -- paths ----------------------------------------------------------------------------

    def inside(self, relative: str) -> str:
        """The real path of `relative`, which must stay inside the dump."""
        if not isinstance(relative, str) or not relative or "\0" in relative:
            raise NotReadable("not a path")
        if os.path.isabs(relative):
            raise NotReadable("an absolute path: outside the dump")
        # A dump has thousands of files in a few hundred directories: resolve each directory
        # once, and only the last name of each file (a symlink is resolved in full).
        parent, _, name = relative.rpartition("/")
        if name in ("", ".", ".."):
            return self._resolve(relative)
        return self._child(relative, parent, name)

    def _real_dir(self, relative: str) -> str:
        """A directory's real path: its parent's (known) and its name, unless the name is a
        link, or odd (., .., empty), or deep: then resolved in full and checked."""
        parent, _, name = relative.rpartition("/")
        if name in ("", ".", "..") or relative.count("/") > MAX_DEPTH:
            return self._resolve(relative)
        return self._child(relative, parent, name)

    def _child(self, relative: str, parent: str, name: str) -> str:
        """The real path of `name` in the directory `parent` (relative: `relative`): its
        parent's real path and its name, or resolved in full when the name is a link."""
        real_parent = self._real_dirs.get(parent)
        if real_parent is None:
            real_parent = self._real_dirs[parent] = self._real_dir(parent)
        entries = self._entries(parent, real_parent)
        candidate = os.path.join(real_parent, name)
        link = entries.get(name, False) if entries is not None else os.path.islink(candidate)
        return self._resolve(relative) if link else candidate

    def _entries(self, parent: str, real_parent: str) -> dict[str, bool] | None:
        if parent in self._listed:
            return self._listed[parent]
        names: dict[str, bool] = {}
        found: dict[str, bool] | None = names
        try:
            with os.scandir(real_parent) as listing:
                for entry in listing:
                    names[entry.name] = entry.is_symlink()
                    if len(names) > LISTING_LIMIT:
                        found = None  # a hostile directory: each name looked up on its own
                        break
        except OSError:
            found = None
        self._listed[parent] = found
        return found

    def _known_missing(self, relative: str) -> bool:
        parent, _, name = relative.rpartition("/")
        entries = self._listed.get(parent)
        return entries is not None and name not in entries

    def _resolve(self, relative: str) -> str:
        real = os.path.realpath(os.path.join(self.real_root, relative))
        if not self._within(real):
            raise NotReadable("leads outside the dump")
        return real

    def _within(self, real: str) -> bool:
        """A real path is the dump's root or lies below it."""
        root = self.real_root
        return real == root or real.startswith(root if root.endswith(os.sep) else root + os.sep)

    def list_dir(self, relative: str) -> list[str]:
        """Names in a directory of the dump ([] when it is absent or not a directory)."""
        try:
            real = self.inside(relative)
            with os.scandir(real) as entries:
                return sorted(e.name for e in entries)
        except (NotReadable, OSError):
            return []

    def is_dir(self, relative: str) -> bool:
        try:
            return stat.S_ISDIR(os.stat(self.inside(relative)).st_mode)
        except (NotReadable, OSError):
            return False

    def regular(self, relative: str) -> bool | None:
        """True for a regular file inside the dump, False for anything else there, None when
        nothing is there."""
        try:
            return stat.S_ISREG(os.stat(self.inside(relative)).st_mode)
        except NotReadable:
            return False
        except OSError:
            return None

    def exists(self, relative: str) -> bool:
        """Whether the file is there, or its compressed form (NAME.gz)."""
        for name in (relative, relative + GZ):
            try:
                os.stat(self.inside(name))
            except (NotReadable, OSError):
                continue
            return True
        return False

    # -- reads ------------------------------------------------------------------------------

    def read_bytes(self, relative: str, limit: int = TEXT_LIMIT) -> bytes:
        """The file's bytes; NotReadable when it is not a regular file inside the dump, or
        larger than `limit`. Where NAME is missing and NAME.gz is there (a capture of many
        processes writes gzipped files), its bytes decompressed, `limit` on both sides."""
        try:
            return self._read_bytes(relative, limit)
        except NotReadable as exc:
            if str(exc) != "missing" or relative.endswith(GZ):
                raise
            try:
                packed = self._read_bytes(relative + GZ, limit)
            except NotReadable as gz_exc:
                if str(gz_exc) == "missing":
                    raise exc from None
                raise
            return _gunzip(packed, limit)

    def _read_bytes(self, relative: str, limit: int) -> bytes:
        real = self.inside(relative)
        if self._known_missing(relative):
            raise NotReadable("missing")
        try:
            # O_NONBLOCK: opening a FIFO must not wait for a writer; fstat then refuses it.
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
        except FileNotFoundError as exc:
            raise NotReadable("missing") from exc
        except OSError as exc:
            raise NotReadable(exc.strerror or str(exc)) from exc
        try:
            self._check_opened(fd)
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise NotReadable("not a regular file (a directory, FIFO, device or socket)")
            if info.st_size > limit:
                raise NotReadable(f"too large ({info.st_size:,} bytes; the limit is {limit:,})")
            chunks = []
            remaining = limit + 1
            while remaining > 0:
                chunk = os.read(fd, min(remaining, 4 * MIB))
                if not chunk:
                    break
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
            if len(data) > limit:
                raise NotReadable(f"too large (more than {limit:,} bytes)")
        except OSError as exc:
            raise NotReadable(exc.strerror or str(exc)) from exc
        finally:
            os.close(fd)
        self.read.add(relative)
        return data

    def _check_opened(self, fd: int) -> None:
        """What was opened lies inside the dump: the paths were checked when their
        directories were first listed, and a directory swapped for a link since then (by
        whoever can write to the dump) must not lead out. Read back from the open file
        itself, so nothing can change in between (Linux; elsewhere the listing's check)."""
        try:
            opened = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            return
        if not self._within(opened):
            raise NotReadable("leads outside the dump")

    def read_json(self, relative: str, limit: int = JSON_LIMIT) -> Any:
        return loads(self.read_bytes(relative, limit))

    # -- reads that record their own failure --------------------------------------------------

    def problem(self, relative: str, what: str) -> None:
        self.problems.append({"file": relative, "problem": what})

    def try_json(self, relative: str, limit: int = JSON_LIMIT, required: bool = True) -> Any:
        """The parsed file, or None with a problem row (none for a missing optional file)."""
        try:
            return self.read_json(relative, limit)
        except NotReadable as exc:
            if required or str(exc) != "missing":
                self.problem(relative, str(exc))
            return None

    def try_bytes(
        self, relative: str, limit: int = TEXT_LIMIT, required: bool = True
    ) -> bytes | None:
        try:
            return self.read_bytes(relative, limit)
        except NotReadable as exc:
            if required or str(exc) != "missing":
                self.problem(relative, str(exc))
            return None
