"""Dump directory -> pandas DataFrames. The only reader of the dump format.

`load_dump(path)` checks the manifest's format and schema_version, parses every raw file
that the capture kept (py-spy JSON, pystack/gdb text, procfs JSON, logs, checkpoint
listings, TF events) and validates the columns each frame must have. A file that is
missing or unreadable becomes a row in `problems`, not an exception: a partial dump from
an incident is still worth analyzing. Analysis needs no TensorFlow.
"""

from __future__ import annotations

import math
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from collectors import layout
from collectors.layout import (
    FORMAT_NAME,
    MANIFEST,
    SUPPORTED_SCHEMA_VERSIONS,
    FailureKind,
    StackSource,
)
from postmortem.bulk import collector_paused
from postmortem.dumpfiles import JSON_LIMIT, MANIFEST_LIMIT, DumpReader, NotReadable
from postmortem.dumpfiles import loads as loads_json
from postmortem.errors import BadDumpError, UnsupportedDumpVersionError
from postmortem.model import PID_BITS

COLUMNS: dict[str, tuple[str, ...]] = {
    "processes": (
        "pid",
        "comm",
        "exe",
        "cwd",
        "cmdline",
        "args",
        "uid",
        "env",
        "python",
        "tensorflow",
        "std_streams",
        "host",  # the host it runs on (a dump of several hosts), else the capture's host
    ),
    "process_rounds": (
        "pid",
        "round",
        "time",
        "state",
        "cpu_seconds",
        "num_threads",
        "rchar",
        "wchar",
        "write_bytes",
        "stat_timeout",
        "rss_bytes",
        "host_listening",
    ),
    "threads": (
        "pid",
        "round",
        "tid",
        "name",
        "state",
        "wchan",
        "cpu_seconds",
        "kernel_stack",
        "voluntary",
        "nonvoluntary",
    ),
    "py_threads": (
        "pid",
        "round",
        "tid",
        "thread_name",
        "active",
        "owns_gil",
        "source",
        "sample",
    ),
    # Between a round and the next: how often each watched thread woke (schema 2).
    "watch": (
        "pid",
        "round",
        "tid",
        "looks",
        "woke",
        "voluntary",
        "nonvoluntary",
        "started",
        "ended",
    ),
    # The size of a log at each round, to place untimed lines between rounds (schema 2).
    "log_sizes": ("pid", "stream", "round", "time", "size"),
    "frames": (
        "pid",
        "round",
        "tid",
        "thread_name",
        "depth",
        "function",
        "filename",
        "line",
        "native",
        "source",
        "code",
        "sample",
    ),
    "files": ("pid", "round", "fd", "path", "size", "pos", "flags"),
    "sockets": (
        "pid",
        "round",
        "fd",
        "proto",
        "local",
        "remote",
        "tcp_state",
        "tx_queue",
        "rx_queue",
        "last_round",  # one row per connection and run of rounds it was seen alike in
    ),
    "checkpoint_files": ("dir", "round", "time", "name", "size", "mtime"),
    "checkpoint_rounds": (
        "dir",
        "round",
        "time",
        "exists",
        "listing_timed_out",
        "state_file",
        "total_bytes",
        "file_count",
    ),
    "log_lines": ("pid", "stream", "line_no", "text", "offset"),
    # The flight recorder's file of a process that runs postmortem.recorder (schema 3).
    "flights": (
        "pid",
        "started",
        "written",
        "trace_every",
        "stall_after_s",
        "running_began",
        "running_traced",
        "saving_began",
        "saving_step",
        "saving_path",
        "sync_replicas",
        "replicas_to_aggregate",
        "total_num_replicas",
        "operation_timeout_ms",
        "inventory_error",
        "captures",
    ),
    "flight_steps": ("pid", "started", "ended", "global_step", "traced"),
    "flight_events": ("pid", "kind", "time", "step", "path", "seconds", "what", "began"),
    "flight_ops": (
        "pid",
        "trace",
        "step",
        "device",
        "node",
        "op",
        "start_us",
        "end_us",
        "label",
    ),
    "flight_variables": ("pid", "name", "shape", "dtype", "bytes", "device"),
    "flight_savers": ("pid", "sharded", "save_tensor", "device"),
    "tf_events": ("address", "plane", "line", "name", "node", "op", "start_ns", "duration_ns"),
    "tf_servers": ("address", "status", "reason", "kind", "answered", "idle"),
    "outcomes": ("target", "collector", "status", "round", "reason", "seconds", "kind"),
    "rounds": ("index", "started_at", "ended_at"),
    "problems": ("file", "problem"),
}


@dataclass
class Dump:
    """A loaded dump: the manifest, the per-process source snippets, and the frames."""

    path: Path
    manifest: dict[str, Any]
    frames_by_name: dict[str, pd.DataFrame]
    sources: dict[int, dict[str, dict[str, str]]] = field(default_factory=dict)
    read_files: frozenset[str] = frozenset()  # paths inside the dump that were read
    # A dump of several hosts: each process's key (its pid here) -> (the directory of its
    # host's dump inside this one, "hosts/h2/", and its pid on that host).
    origins: dict[int, tuple[str, int]] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        frames = self.__dict__.get("frames_by_name", {})
        if name in frames:
            frame: pd.DataFrame = frames[name]
            return frame
        raise AttributeError(name)

    @property
    def host(self) -> str:
        return str(self.manifest.get("host", ""))

    def source_line(self, pid: int, filename: str, line: int) -> str:
        return self.sources.get(pid, {}).get(filename, {}).get(str(line), "")


def as_int(value: Any) -> int:
    """A pandas scalar (numpy int, float, str) as int: pandas-stubs type them loosely."""
    return int(value)


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as plain dicts: the typed way to iterate a frame (itertuples is untyped). Built
    from each column's `tolist()` (Python values, NaN as float nan, as `to_dict` gives
    them) at 2-4 x the speed of `to_dict("records")`, which boxes every cell on its own."""
    names: list[Any] = list(frame.columns)
    if not names or len(set(names)) != len(names):
        return frame.to_dict("records")  # type: ignore[return-value]
    columns = [frame[c].tolist() for c in names]
    return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]


def _frame(name: str, rows: list[dict[str, Any]]) -> pd.DataFrame:
    columns = COLUMNS[name]
    df = pd.DataFrame(rows, columns=list(columns)) if rows else pd.DataFrame(columns=list(columns))
    missing = [c for c in columns if c not in df.columns]
    if missing:  # pragma: no cover - rows are built here; a guard for future edits
        raise BadDumpError(f"internal: frame {name} lacks columns {missing}")
    return df


def _columns_frame(name: str, columns: dict[str, list[Any]]) -> pd.DataFrame:
    """A frame from per-column lists: big frames (500,000 thread rows) skip per-row dicts."""
    if not columns[COLUMNS[name][0]]:
        return _frame(name, [])
    # Each column's list is dropped as soon as its array is made.
    return pd.DataFrame({c: _array(columns.pop(c)) for c in COLUMNS[name]})


def _array(values: list[Any]) -> Any:
    """A column of only ints (or only floats) as a numpy array built in one step: what
    pandas would infer from the list, in an eighth of the time (5 million socket rows)."""
    kinds = set(map(type, values))
    if len(kinds) == 1 and (kind := kinds.pop()) in (int, float):
        try:
            return np.array(values, dtype=np.int64 if kind is int else np.float64)
        except OverflowError:  # an int beyond 64 bits: pandas keeps it as an object
            return values
    if kinds == {int, type(None)}:  # pandas reads these as floats, None as NaN...
        ints = [v for v in values if v is not None]
        if -(2**63) <= min(ints) and max(ints) < 2**63:  # ...when they fit in 64 bits
            return np.array(values, dtype=np.float64)
    return values


COLUMNAR = ("threads", "files", "sockets")


def read_manifest(path: Path, reader: DumpReader | None = None) -> dict[str, Any]:
    """The manifest, checked: a clear BadDumpError / UnsupportedDumpVersionError for a path
    that is not a dump, a manifest that cannot be read, or a version we do not know."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise BadDumpError(f"{path} does not exist.") from None
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise BadDumpError(f"{path} cannot be read: {reason}.") from None
    if not stat.S_ISDIR(info.st_mode):
        raise BadDumpError(f"{path} is not a directory.")
    reader = reader or DumpReader(path)
    try:
        manifest = reader.read_json(MANIFEST, MANIFEST_LIMIT)
    except NotReadable as exc:
        if str(exc) == "missing":
            raise BadDumpError(f"{path} has no {MANIFEST}: it is not a postmortem dump.") from None
        raise BadDumpError(
            f"{path / MANIFEST} cannot be used: {exc}.",
            help_text="Capture again; a dump's other files may still be read by hand.",
        ) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BadDumpError(f"{path / MANIFEST} is not a postmortem dump manifest.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BadDumpError(
            f"{path / MANIFEST} has no valid schema_version ({version!r}): the manifest is "
            "damaged or was not written by postmortem.",
            help_text="Capture again, or read the dump's other files by hand.",
        )
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        newest = max(SUPPORTED_SCHEMA_VERSIONS)
        raise UnsupportedDumpVersionError(
            f"{path} has dump schema_version {version}; this postmortem reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}."
            + (" It was written by a newer postmortem." if version > newest else ""),
            help_text="Upgrade postmortem (pip install -U postmortem) to read this dump."
            if version > newest
            else "This dump is too old for this postmortem; analyze it with an older release.",
        )
    for key in ("targets", "rounds", "outcomes"):
        if not isinstance(manifest.get(key), list):
            raise BadDumpError(f"{path / MANIFEST} lacks its '{key}' list: the dump is corrupt.")
    return manifest


# -- raw tool output parsers -----------------------------------------------------------


def parse_pyspy(
    raw: Any,
    pid: int,
    round_index: int,
    sources: dict[str, dict[str, str]],
    sample: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """py-spy's JSON -> thread and frame rows; `sample` 0 is the round's own dump, 1 the
    watch's second look between rounds."""
    threads, frames = [], []
    for thread in raw:
        if not isinstance(thread, dict):
            continue
        tid = _i(thread.get("os_thread_id")) or _i(thread.get("thread_id"))
        if tid is None:
            continue
        name = _s(thread.get("thread_name"))
        threads.append(
            {
                "pid": pid,
                "round": round_index,
                "tid": tid,
                "thread_name": name,
                "active": bool(thread.get("active")),
                "owns_gil": bool(thread.get("owns_gil")),
                "source": "pyspy",
                "sample": sample,
            }
        )
        listed = thread.get("frames")
        for depth, frame in enumerate(listed if isinstance(listed, list) else []):
            if not isinstance(frame, dict):
                continue
            filename = _s(frame.get("filename"))
            line = _i(frame.get("line")) or 0
            native = not filename.endswith(".py") and "<" not in filename and bool(filename)
            frames.append(
                {
                    "pid": pid,
                    "round": round_index,
                    "tid": tid,
                    "thread_name": name,
                    "depth": depth,
                    "function": _s(frame.get("name")),
                    "filename": filename,
                    "line": line,
                    "native": native,
                    "source": "pyspy",
                    "code": _s(_source_line(sources, filename, line)).strip(),
                    "sample": sample,
                }
            )
    return threads, frames


PYSTACK_THREAD = re.compile(r"^Traceback for thread (\d+) \((.*?)\)")
PYSTACK_FRAME = re.compile(r'^\s+\((C|Python)\) File "(.*?)", line (\d+), in (\S+)')
GDB_THREAD = re.compile(r'^Thread \d+ \(.*?LWP (\d+)\)(?: "(.*?)")?')
GDB_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(.*?\)(?: at (\S+):(\d+))?")


def _source_line(sources: dict[str, Any], filename: str, line: int) -> Any:
    lines = sources.get(filename)
    return lines.get(str(line), "") if isinstance(lines, dict) else ""


def parse_native_text(text: str, pid: int, round_index: int, source: str) -> list[dict[str, Any]]:
    """pystack --native-all or gdb `thread apply all bt` -> frame rows (depth 0 innermost)."""
    rows: list[dict[str, Any]] = []
    current: list[dict[str, Any]] = []
    tid, name = 0, ""
    thread_re, frame_re = (
        (PYSTACK_THREAD, PYSTACK_FRAME) if source == "pystack" else (GDB_THREAD, GDB_FRAME)
    )

    def flush() -> None:
        ordered = current[::-1] if source == "pystack" else current  # pystack: outermost first
        for depth, frame in enumerate(ordered):
            rows.append({**frame, "depth": depth, "tid": tid, "thread_name": name})

    for line in text.splitlines():
        thread_match = thread_re.match(line)
        if thread_match:
            flush()
            current = []
            tid, name = int(thread_match.group(1)), thread_match.group(2) or ""
            continue
        frame_match = frame_re.match(line)
        if not frame_match:
            if current and source == "pystack" and line.startswith("        "):
                current[-1]["code"] = line.strip()
            continue
        if source == "pystack":
            kind, filename, lineno, function = frame_match.groups()
            native = kind == "C"
        else:
            function, filename, lineno = frame_match.groups()
            native = True
        current.append(
            {
                "pid": pid,
                "round": round_index,
                "function": function,
                "filename": filename or "",
                "line": int(lineno or 0),
                "native": native,
                "source": source,
                "code": "",
                "sample": 0,
            }
        )
    flush()
    return rows


def _cpu(ticks: int, clk_tck: int) -> float:
    return ticks / (clk_tck or 100)


# -- the loader --------------------------------------------------------------------------


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def legacy_kind(outcome: dict[str, Any]) -> str:
    """The failure kind of an outcome from a dump written before outcomes carried one."""
    if outcome.get("status") != "failed":
        return ""
    reason = str(outcome.get("reason") or "").lower()
    if outcome.get("collector") == "tf_profiler":
        return FailureKind.NO_ANSWER.value
    if "exited" in reason:
        return FailureKind.EXITED.value
    return FailureKind.ERROR.value


def load_dump(path: Path | str) -> Dump:
    with collector_paused():
        try:
            return _load_dump(path)
        finally:
            _INTERNED.clear()


# The strings of the big columns (thread names and states, socket addresses and states),
# one object per distinct value: millions of rows repeat a few thousand values, and every
# round repeats the last one's.
_INTERNED: dict[str, str] = {}


def _interned(column: list[Any]) -> list[Any]:
    keep = _INTERNED.setdefault
    return list(map(keep, column, column))


# -- a dump of several hosts (capture --host) ---------------------------------------------------

HOST_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
# Columns that hold a host's wall-clock time: moved onto the capturing host's clock.
TIME_COLUMNS = {
    "process_rounds": ("time",),
    "watch": ("started", "ended"),
    "log_sizes": ("time",),
    "checkpoint_files": ("time", "mtime"),
    "flights": ("started", "written", "running_began", "saving_began"),
    "flight_steps": ("started", "ended"),
    "flight_events": ("time", "began"),
    "rounds": ("started_at", "ended_at"),
}


def host_offset(entry: dict[str, Any]) -> float:
    """Seconds to add to a host's clock to read it on the capturing host's: the median of
    the offsets measured at each round (0 when none was measured)."""
    offsets = sorted(
        float(c["offset"])
        for c in _list(entry.get("clock"))
        if isinstance(c, dict) and isinstance(c.get("offset"), (int, float))
        and math.isfinite(c["offset"])
    )
    return offsets[len(offsets) // 2] if offsets else 0.0


def _load_hosts(root: Path, manifest: dict[str, Any], reader: DumpReader) -> Dump:
    """Every captured host's dump, as one: pids keyed apart, times on one clock."""
    loaded: list[tuple[str, dict[str, Any], Dump]] = []
    problems = list(reader.problems)
    for entry in _list(manifest.get("hosts")):
        if not isinstance(entry, dict) or entry.get("status") != "ok":
            continue
        name = _s(entry.get("name"))
        relative = f"hosts/{name}"
        if not HOST_NAME.fullmatch(name) or name in ("..", "."):
            problems.append({"file": MANIFEST, "problem": f"a host name that is not one: {name!r}"})
            continue
        if not reader.is_dir(relative):
            problems.append({"file": relative, "problem": "missing: the host's dump is not there"})
            continue
        try:
            sub = _load_dump(root / relative, nested=True)
        except (BadDumpError, UnsupportedDumpVersionError) as exc:
            problems.append({"file": relative, "problem": exc.message})
            continue
        loaded.append((name, entry, sub))
    if not loaded:
        raise BadDumpError(
            f"{root} is a dump of several hosts, and none of their dumps could be read.",
            help_text="Capture again; manifest.json's `hosts` says why each host failed.",
        )
    frames: dict[str, list[pd.DataFrame]] = {}
    sources: dict[int, dict[str, dict[str, str]]] = {}
    origins: dict[int, tuple[str, int]] = {}
    read: set[str] = {MANIFEST}
    targets: list[dict[str, Any]] = []
    outcomes: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    checkpoint_dirs: list[dict[str, Any]] = []
    for index, (name, entry, sub) in enumerate(loaded):
        shift = index << PID_BITS
        offset = host_offset(entry)
        prefix = f"hosts/{name}/"
        for frame_name, frame in sub.frames_by_name.items():
            frame = frame.copy()
            if shift and "pid" in frame.columns and not frame.empty:
                frame["pid"] = frame["pid"].map(lambda p, s=shift: p + s if pd.notna(p) else p)
            for column in TIME_COLUMNS.get(frame_name, ()) if offset else ():
                if column in frame.columns:
                    frame[column] = pd.to_numeric(frame[column], errors="coerce") + offset
            if frame_name == "processes":
                frame["host"] = name
            if frame_name == "outcomes" and shift and not frame.empty:
                frame["target"] = [
                    str(int(t) + shift) if str(t).isdigit() else t for t in frame["target"]
                ]
            if frame_name in ("checkpoint_files", "checkpoint_rounds") and not frame.empty:
                frame["dir"] = f"{name}:" + frame["dir"].astype(str)  # a path on that host
            if frame_name == "problems" and not frame.empty:
                frame["file"] = prefix + frame["file"].astype(str)
            frames.setdefault(frame_name, []).append(frame)
        for pid, snippets in sub.sources.items():
            sources[pid + shift] = snippets
        for pid in sub.processes["pid"].tolist() if not sub.processes.empty else []:
            origins[int(pid) + shift] = (prefix, int(pid))
        read.update(prefix + f for f in sub.read_files)
        targets.extend(
            {**target, "pid": int(target["pid"]) + shift, "host": name}
            for target in _list(sub.manifest.get("targets"))
            if isinstance(target, dict) and _int(target.get("pid")) is not None
        )
        for outcome in _list(sub.manifest.get("outcomes")):
            if isinstance(outcome, dict):
                target = _s(outcome.get("target"))
                moved = str(int(target) + shift) if target.isdigit() else target
                outcomes.append({**outcome, "target": moved, "host": name})
        logs.extend(
            {**log, "file": prefix + _s(log.get("file"))}
            for log in _list(sub.manifest.get("logs"))
            if isinstance(log, dict)
        )
        checkpoint_dirs.extend(
            {**entry, "dir": f"{name}:{_s(entry.get('dir'))}", "prefix": prefix}
            for entry in _list(sub.manifest.get("checkpoint_dirs"))
            if isinstance(entry, dict)
        )
    merged = {
        **manifest,
        "targets": targets,
        "outcomes": outcomes,
        "logs": logs,
        "checkpoint_dirs": checkpoint_dirs,
        "rounds": [
            {**r, "started_at": (_f(r.get("started_at")) or 0) + host_offset(loaded[0][1]),
             "ended_at": (_f(r.get("ended_at")) or 0) + host_offset(loaded[0][1])}
            for r in _list(loaded[0][2].manifest.get("rounds"))
            if isinstance(r, dict)
        ],
        "logs_only": all(sub.manifest.get("logs_only") for _, _, sub in loaded),
        "hosts_loaded": [name for name, _, _ in loaded],
        "host_offsets": {name: host_offset(entry) for name, entry, _ in loaded},
    }
    combined = {
        name: pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        for name, parts in frames.items()
    }
    if problems:
        extra = pd.DataFrame(problems, columns=list(COLUMNS["problems"]))
        combined["problems"] = pd.concat([combined["problems"], extra], ignore_index=True)
    return Dump(root, merged, combined, sources, frozenset(read), origins)


def _load_dump(path: Path | str, nested: bool = False) -> Dump:
    root = Path(path)
    reader = DumpReader(root)
    manifest = read_manifest(root, reader)
    if manifest.get("multi_host"):
        if nested:
            raise BadDumpError(f"{root}: a dump of several hosts inside another one.")
        return _load_hosts(root, manifest, reader)
    problems = reader.problems
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    columns: dict[str, dict[str, list[Any]]] = {
        name: {c: [] for c in COLUMNS[name]} for name in COLUMNAR
    }
    sources_by_pid: dict[int, dict[str, dict[str, str]]] = {}
    guard = _Guard(rows, columns, problems)
    runs = _SocketRuns(columns["sockets"])
    seen_pids: set[int] = set()
    # Schema 5: the capture's source lines once, a process's own file holding what differs.
    shared = reader.try_json(layout.SHARED_SOURCES, required=False)
    shared_sources: dict[str, Any] = shared if isinstance(shared, dict) else {}

    def load_target(target: Any) -> None:
        pid = _int(target.get("pid")) if isinstance(target, dict) else None
        if pid is None:
            reader.problem(MANIFEST, f"a target that is not a process: {str(target)[:80]}")
            return
        if pid in seen_pids:
            reader.problem(MANIFEST, f"process {pid} is listed twice; read once")
            return
        seen_pids.add(pid)
        info = reader.try_json(layout.process_file(pid))
        if not isinstance(info, dict):
            # Identity lost (no flags, no role); its rounds may still be intact.
            if info is not None:
                reader.problem(layout.process_file(pid), "unexpected content: not an object")
            info = {}
            if not reader.is_dir(layout.process_dir(pid)):
                return
        own = reader.try_json(layout.sources_file(pid), required=False)
        sources = _with_own(shared_sources, own if isinstance(own, dict) else {})
        sources_by_pid[pid] = sources
        cmdline = info.get("cmdline") or []
        if isinstance(cmdline, str):
            cmdline = cmdline.split()
        cmdline = [str(arg) for arg in cmdline] if isinstance(cmdline, list) else []
        env = info.get("env") if isinstance(info.get("env"), dict) else {}
        streams = target.get("std_streams")
        rows["processes"].append(
            {
                "pid": pid,
                "comm": str(info.get("comm", "")),
                "exe": str(info.get("exe", "")),
                "cwd": str(info.get("cwd", "")),
                "cmdline": " ".join(cmdline),
                "args": cmdline,
                "uid": info.get("uid"),
                "env": {str(k): str(v) for k, v in (env or {}).items()},
                "python": info.get("python"),
                "tensorflow": info.get("tensorflow"),
                "std_streams": streams if isinstance(streams, dict) else {},
                "host": _s(manifest.get("host")),
            }
        )
        for name in reader.list_dir(layout.process_dir(pid)):
            round_index = layout.round_index(name)
            if round_index is None or not name.startswith("round-"):
                continue
            guard.run(
                layout.round_dir(pid, round_index),
                _load_round,
                reader,
                pid,
                round_index,
                sources,
                rows,
                columns,
                guard,
                runs,
            )
        flight = layout.flight_file(pid)
        guard.run(flight, _load_flight, reader, flight, pid, rows)
        tails: Any = target.get("log_tails")
        for stream in ("stdout", "stderr"):
            data = reader.try_bytes(layout.std_stream_file(pid, stream), required=False)
            if data is not None:
                tail: Any = tails.get(stream) if isinstance(tails, dict) else None
                start = _int(tail.get("start")) if isinstance(tail, dict) else None
                _add_log_lines(rows, pid, stream, data, start)

    for target in manifest["targets"]:
        guard.run(f"{MANIFEST} target {str(target)[:60]}", load_target, target)
    # A dump of logs alone (`capture --log FILE` of a job that already ended) has no target.
    logs_only = manifest.get("logs_only") is True and not manifest["targets"]
    if not rows["processes"] and not logs_only:
        listed = len(manifest["targets"])
        why = "; ".join(f"{p['file']}: {p['problem']}" for p in problems[:5])
        raise BadDumpError(
            f"{root}: no process could be loaded ({listed} listed in {MANIFEST})"
            + (f": {why}" if why else "")
            + ".",
            help_text="Capture again; the files named above are damaged or missing.",
        )

    for entry in manifest.get("logs") or []:
        if not isinstance(entry, dict):
            continue
        data = reader.try_bytes(str(entry.get("file", "")))
        if data is None:
            continue
        stream = str(entry.get("path", entry.get("file")))
        _add_log_lines(rows, None, stream, data, _int(entry.get("start")))
        for size in entry.get("sizes") or []:
            if isinstance(size, dict) and _int(size.get("size")) is not None:
                rows["log_sizes"].append(
                    {
                        "pid": None,
                        "stream": stream,
                        "round": _int(size.get("round")),
                        "time": _number(size.get("time")),
                        "size": _int(size.get("size")),
                    }
                )

    def load_checkpoint_dir(entry: Any) -> None:
        index = _int(entry.get("index"))
        if index is None:
            reader.problem(MANIFEST, f"a checkpoint_dirs entry without an index: {entry!r:.80}")
            return
        for name in reader.list_dir(layout.checkpoint_dir(index)):
            round_index = layout.round_index(name)
            if round_index is None or not name.endswith((".json", ".json.gz")):
                continue
            listing = reader.try_json(layout.checkpoint_file(index, round_index))
            if not isinstance(listing, dict):
                continue
            files = [f for f in listing.get("files") or [] if isinstance(f, dict)]
            rows["checkpoint_rounds"].append(
                {
                    "dir": _s(entry.get("dir")),
                    "round": round_index,
                    "time": _f(listing.get("time")),
                    "exists": _b(listing.get("exists")),
                    "listing_timed_out": bool(listing.get("listing_timed_out")),
                    "state_file": _s(listing.get("state_file")) or None,
                    "total_bytes": sum(_i(f.get("size")) or 0 for f in files),
                    "file_count": len(files),
                }
            )
            rows["checkpoint_files"].extend(
                {
                    "dir": _s(entry.get("dir")),
                    "round": round_index,
                    "time": _f(listing.get("time")),
                    "name": _s(f.get("name")),
                    "size": _i(f.get("size")),
                    "mtime": _f(f.get("mtime")),
                }
                for f in files
            )

    for entry in manifest.get("checkpoint_dirs") or []:
        guard.run(f"checkpoint_dirs entry {str(entry)[:60]}", load_checkpoint_dir, entry)

    outcomes = [dict(o) for o in manifest["outcomes"] if isinstance(o, dict)]
    for outcome in outcomes:
        if "kind" not in outcome:
            outcome["kind"] = legacy_kind(outcome)

    def load_tf_server(server: Any) -> None:
        address = _s(server.get("address"))
        outcome: dict[str, Any] = next(
            (
                o
                for o in outcomes
                if o.get("collector") == "tf_profiler" and o.get("target") == address
            ),
            {},
        )
        index = _int(server.get("index"))
        data = (
            reader.try_json(layout.tf_events_file(index), required=False)
            if index is not None
            else None
        )
        data = data if isinstance(data, dict) else None
        rows["tf_servers"].append(
            {
                "address": address,
                "status": outcome.get("status", "unknown"),
                "reason": outcome.get("reason", ""),
                "kind": outcome.get("kind", ""),
                "answered": bool(data and data.get("answered", True)),
                "idle": bool(data and data.get("idle")),
            }
        )
        events = (data or {}).get("events", [])
        for event in events if isinstance(events, list) else []:
            if not isinstance(event, dict):
                continue
            rows["tf_events"].append(
                {
                    "address": address,
                    "plane": _s(event.get("plane")),
                    "line": _s(event.get("line")),
                    "name": _s(event.get("name")),
                    "node": _s(event.get("node")),
                    "op": _s(event.get("op")),
                    "start_ns": _f(event.get("start_ns")),
                    "duration_ns": _f(event.get("duration_ns")),
                }
            )

    for server in manifest.get("tf_servers") or []:
        guard.run(f"tf_servers entry {str(server)[:60]}", load_tf_server, server)

    # Files the capture says it wrote and the dump no longer holds: deleted, or lost in
    # transit. Listed, so nobody takes a verdict from a partial dump for a whole one.
    recorded = {
        str(f)
        for o in outcomes
        if o.get("status") == "ok" and isinstance(o.get("files"), list)
        for f in o["files"]
        if isinstance(f, str)
    }
    already = {p["file"] for p in problems}
    for relative in sorted(recorded - already - reader.read):
        regular = reader.regular(relative)
        if regular is None:
            reader.problem(relative, "missing: the capture wrote it, the dump no longer has it")
        elif not regular:
            reader.problem(relative, "not a regular file (a directory, FIFO, device or link out)")
    rows["outcomes"] = [
        {
            "target": _s(o.get("target")),
            "collector": _s(o.get("collector")),
            "status": _s(o.get("status")),
            "round": _i(o.get("round")),
            "reason": _s(o.get("reason")),
            "seconds": _f(o.get("seconds")),
            "kind": _s(o.get("kind")),
        }
        for o in outcomes
    ]
    rows["rounds"] = [
        {
            "index": _i(r.get("index")),
            "started_at": _f(r.get("started_at")),
            "ended_at": _f(r.get("ended_at")),
        }
        for r in manifest["rounds"]
        if isinstance(r, dict)
    ]
    rows["problems"] = problems
    # Each list is let go once its frame is built (the guard's marks go first): the loaded
    # rows and their frames are not all held at once (9.5 million socket rows at 10,000).
    guard.lists.clear()
    frames = {name: _frame(name, rows.pop(name)) for name in list(rows)}
    for name in list(columns):
        frames[name] = _columns_frame(name, columns.pop(name))
    return Dump(root, manifest, frames, sources_by_pid, frozenset(reader.read))


def _load_round(
    reader: DumpReader,
    pid: int,
    round_index: int,
    sources: dict[str, dict[str, str]],
    rows: dict[str, list[dict[str, Any]]],
    columns: dict[str, dict[str, list[Any]]],
    guard: _Guard,
    runs: _SocketRuns,
) -> None:
    """Each file of a round is its own unit: garbage in one keeps the others."""
    procfs = layout.procfs_file(pid, round_index)
    guard.run(procfs, _load_procfs, reader, procfs, pid, round_index, rows, columns, runs)
    pyspy = layout.pyspy_file(pid, round_index)
    guard.run(pyspy, _load_pyspy, reader, pyspy, pid, round_index, sources, rows)
    second = layout.pyspy_watch_file(pid, round_index)
    guard.run(second, _load_pyspy, reader, second, pid, round_index, sources, rows, 1)
    watched = layout.watch_file(pid, round_index)
    guard.run(watched, _load_watch, reader, watched, pid, round_index, rows)
    for source in (StackSource.PYSTACK, StackSource.GDB):
        native = layout.native_file(pid, round_index, source)
        guard.run(native, _load_native, reader, native, pid, round_index, source, rows)


def _load_procfs(
    reader: DumpReader,
    relative: str,
    pid: int,
    round_index: int,
    rows: dict[str, list[dict[str, Any]]],
    columns: dict[str, dict[str, list[Any]]],
    runs: _SocketRuns,
) -> None:
    data = reader.try_json(relative, required=False)
    if data is None:
        return
    if not isinstance(data, dict):
        reader.problem(relative, "unexpected content: not an object")
        return
    clk = int(data.get("clk_tck") or 100)
    io = data.get("io") or {}
    io = io if isinstance(io, dict) else {}
    rows["process_rounds"].append(
        {
            "pid": pid,
            "round": round_index,
            "time": _f(data.get("time")),
            "state": _s(data.get("state")) or "?",
            "cpu_seconds": _cpu(int(data.get("utime") or 0) + int(data.get("stime") or 0), clk),
            "num_threads": _i(data.get("num_threads")),
            "rchar": _i(io.get("rchar")),
            "wchar": _i(io.get("wchar")),
            "write_bytes": _i(io.get("write_bytes")),
            "stat_timeout": bool(data.get("stat_timeout")),
            "rss_bytes": _i(data.get("rss_bytes")),
            "host_listening": _strings(data.get("host_listening")),
        }
    )
    threads_value = data.get("threads")
    if isinstance(threads_value, dict):
        if _thread_columns(threads_value, pid, round_index, clk, columns["threads"]):
            threads_value = None
        else:  # a column of the wrong type or length: each row on its own, as before
            threads_value = _rows(threads_value, THREAD_FIELDS)
    if threads_value:
        _thread_rows(threads_value, pid, round_index, clk, columns["threads"])
    files = data.get("files")
    if isinstance(files, dict):  # columns: only the fd and size of each file
        fds, sizes = files.get("fd"), files.get("size")
        files = [
            {"fd": fd, "size": size}
            for fd, size in zip(
                fds if isinstance(fds, list) else [],
                sizes if isinstance(sizes, list) else [],
                strict=False,
            )
            if fd in (1, 2)
        ]
    for item in files or []:
        if (
            isinstance(item, dict)
            and item.get("fd") in (1, 2)
            and _int(item.get("size")) is not None
        ):
            rows["log_sizes"].append(
                {
                    "pid": pid,
                    "stream": "stdout" if item["fd"] == 1 else "stderr",
                    "round": round_index,
                    "time": data.get("time"),
                    "size": _int(item.get("size")),
                }
            )
    n, block, _ = _typed_block("files", data.get("files"))
    cols = columns["files"]
    cols["pid"].extend([pid] * n)
    cols["round"].extend([round_index] * n)
    for key, values in block.items():
        cols[key].extend(values)
    sockets = data.get("sockets")
    if not runs.unchanged(pid, round_index, sockets):
        n, block, whole = _typed_block("sockets", sockets)
        runs.add(pid, round_index, n, block)
        runs.raw = sockets if whole else None


def _typed_block(name: str, value: Any) -> tuple[int, dict[str, list[Any]], bool]:
    """A files or sockets block (columns in schema 5, a list of objects before), as typed
    columns after pid and round, its row count, and whether every column was there and of
    the exact types it is read as, so taken whole."""
    keys = COLUMNS[name][2 : 2 + len(COLUMN_TYPES[name])]
    if isinstance(value, dict) and _same_lengths(value):
        n = _length(value)
        block = {}
        whole = True
        for key, typed in zip(keys, COLUMN_TYPES[name], strict=True):
            column = value.get(key)
            if not isinstance(column, list):
                block[key] = [typed(None)] * n
                whole = False
            elif set(map(type, column)) <= FAST_TYPES[typed]:
                block[key] = _interned(column) if typed is _s else column
            else:
                block[key] = [typed(v) for v in column]
                whole = False
        return n, block, whole
    items = [item for item in _rows(value, keys) if isinstance(item, dict)]
    return len(items), {
        key: [typed(item.get(key)) for item in items]
        for key, typed in zip(keys, COLUMN_TYPES[name], strict=True)
    }, False


class _SocketRuns:
    """Sockets, one row per connection for as long as it stays the same: a hung job's
    thousands of connections look alike in every round (28 million rows at 10,000
    processes x 3 rounds, one per connection and round). A row is extended to the next
    round (`last_round`) when the same process shows the very same socket there (fd,
    addresses, state, queues); anything that changed is a row of its own. Rounds of a
    process are read in order, one process after the other."""

    FIELDS = COLUMNS["sockets"][2:-1]

    def __init__(self, cols: dict[str, list[Any]]) -> None:
        self.cols = cols
        self.pid: int | None = None
        self.round = -1
        self.rows: list[tuple[Any, ...]] = []  # the previous round's sockets of self.pid
        self.at: list[int] = []  # and the row each one is in
        self.raw: Any = None  # the previous round's sockets as read, before typing

    def unchanged(self, pid: int, round_index: int, raw: Any) -> bool:
        """The very same sockets block as the previous round's of this process, as read:
        its rows are extended without typing or comparing them one by one (most rounds of a
        hung job; 19 million of the 28.5 million socket rows at 10,000 x 3). Only a block
        of columns of exact types is kept to compare with (`raw`); equal to it, a block's
        strings are strings, and its int columns are checked for a bool or float that
        equals an int (True == 1) but would read differently."""
        if (
            self.raw is None
            or pid != self.pid
            or round_index != self.round + 1
            or raw != self.raw
            or not all(set(map(type, raw[k])) <= FAST_TYPES[_i] for k in _SOCKET_INT_FIELDS)
        ):
            return False
        self._extend(round_index)
        self.round = round_index
        return True

    def _extend(self, round_index: int) -> None:
        """The previous round's rows stand for this round too."""
        last = self.cols["last_round"]
        for index in self.at:
            last[index] = round_index

    def add(self, pid: int, round_index: int, n: int, block: dict[str, list[Any]]) -> None:
        cols, last = self.cols, self.cols["last_round"]
        rows = list(zip(*(block[k] for k in self.FIELDS), strict=True)) if n else []
        follows = pid == self.pid and round_index == self.round + 1
        if follows and rows == self.rows:  # the common case: nothing changed at all
            self._extend(round_index)
        elif follows and self.rows:
            earlier = dict(zip(self.rows, self.at, strict=True))
            at = []
            for row in rows:
                found = earlier.pop(row, None)  # popped: a second alike row is a new row
                if found is None:
                    index = len(last)
                    cols["pid"].append(pid)
                    cols["round"].append(round_index)
                    for key, value in zip(self.FIELDS, row, strict=True):
                        cols[key].append(value)
                    last.append(round_index)
                else:
                    index = found
                    last[index] = round_index
                at.append(index)
            self.at = at
        else:
            start = len(last)
            cols["pid"].extend([pid] * n)
            cols["round"].extend([round_index] * n)
            for key in self.FIELDS:
                cols[key].extend(block[key])
            last.extend([round_index] * n)
            self.at = list(range(start, start + n))
        self.pid, self.round, self.rows = pid, round_index, rows


def _with_own(shared: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """A process's source lines: the capture's shared ones (the same object for every
    process that has no lines of its own), and for each file it has its own lines of (its
    file at that path differs: another mount namespace) those instead."""
    if not own:
        return shared
    return {**shared, **own}


def _length(block: dict[str, Any]) -> int:
    return max((len(v) for v in block.values() if isinstance(v, list)), default=0)


def _same_lengths(block: dict[str, Any]) -> bool:
    """Every column of a block of columns (schema 5) a list, all of one length."""
    values = list(block.values())
    return all(isinstance(v, list) for v in values) and len({len(v) for v in values}) <= 1


def _rows(value: Any, keys: tuple[str, ...]) -> list[Any]:
    """A list of objects, from a list (schema 1-4) or from columns (schema 5), with only
    the fields the loader reads (`keys`): columns of different lengths give as many rows
    as the longest, missing cells null."""
    if value is None or isinstance(value, list):
        return value or []
    if not isinstance(value, dict):
        raise ValueError(f"not a list or columns: {type(value).__name__}")
    known = [k for k in keys if isinstance(value.get(k), list)]
    n = max((len(value[k]) for k in known), default=0)
    return [{k: value[k][i] if i < len(value[k]) else None for k in known} for i in range(n)]


THREAD_FIELDS = (
    "tid", "name", "state", "wchan", "utime", "stime", "kernel_stack", "voluntary",
    "nonvoluntary",
)  # fmt: skip


def _thread_rows(
    items: list[Any], pid: int, round_index: int, clk: int, cols: dict[str, list[Any]]
) -> None:
    threads = [t for t in items if isinstance(t, dict) and isinstance(t.get("tid"), int)]
    cols["pid"].extend([pid] * len(threads))
    cols["round"].extend([round_index] * len(threads))
    cols["tid"].extend([t["tid"] for t in threads])
    cols["name"].extend([_s(t.get("name")) for t in threads])
    cols["state"].extend([_s(t.get("state")) or "?" for t in threads])
    cols["wchan"].extend([_s(t.get("wchan")) for t in threads])
    cols["kernel_stack"].extend(
        [" <- ".join(map(str, t.get("kernel_stack") or [])) for t in threads]
    )
    cols["cpu_seconds"].extend(
        [_cpu(int(t.get("utime") or 0) + int(t.get("stime") or 0), clk) for t in threads]
    )
    cols["voluntary"].extend([_int(t.get("voluntary")) for t in threads])
    cols["nonvoluntary"].extend([_int(t.get("nonvoluntary")) for t in threads])


def _thread_columns(
    block: dict[str, Any], pid: int, round_index: int, clk: int, cols: dict[str, list[Any]]
) -> bool:
    """A round's threads as columns (schema 5), taken a column at a time when every
    column has the type the rows would be read as; False (nothing taken) otherwise."""
    if not _same_lengths(block):
        return False
    tid = block.get("tid")
    if not isinstance(tid, list):
        return False
    n = len(tid)

    def column(key: str) -> list[Any]:
        value = block.get(key)
        return value if isinstance(value, list) else [None] * n

    name, state, wchan = column("name"), column("state"), column("wchan")
    utime, stime, stack = column("utime"), column("stime"), column("kernel_stack")
    voluntary, nonvoluntary = column("voluntary"), column("nonvoluntary")
    ints, maybe_ints = {int}, {int, type(None)}
    if not (
        set(map(type, tid)) <= ints
        and set(map(type, name)) <= {str}
        and set(map(type, state)) <= {str}
        and "" not in set(state)
        and set(map(type, wchan)) <= {str}
        and set(map(type, utime)) <= ints
        and set(map(type, stime)) <= ints
        and set(map(type, stack)) <= {list, type(None)}
        and set(map(type, voluntary)) <= maybe_ints
        and set(map(type, nonvoluntary)) <= maybe_ints
    ):
        return False
    cols["pid"].extend([pid] * n)
    cols["round"].extend([round_index] * n)
    cols["tid"].extend(tid)
    cols["name"].extend(_interned(name))
    cols["state"].extend(_interned(state))
    cols["wchan"].extend(_interned(wchan))
    cols["kernel_stack"].extend([" <- ".join(map(str, k)) if k else "" for k in stack])
    tick = clk or 100
    cols["cpu_seconds"].extend([(u + s) / tick for u, s in zip(utime, stime, strict=True)])
    cols["voluntary"].extend(voluntary)
    cols["nonvoluntary"].extend(nonvoluntary)
    return True


def _load_pyspy(
    reader: DumpReader,
    relative: str,
    pid: int,
    round_index: int,
    sources: dict[str, dict[str, str]],
    rows: dict[str, list[dict[str, Any]]],
    sample: int = 0,
) -> None:
    raw = reader.try_bytes(relative, JSON_LIMIT, required=False)
    if raw is None or not raw.strip():
        return  # py-spy printed nothing: its failure is in the manifest's outcomes
    try:
        traces = loads_json(raw)
    except NotReadable as exc:
        reader.problem(relative, str(exc))
        return
    if not isinstance(traces, list):
        reader.problem(relative, "unexpected content: not a list of threads")
        return
    threads, frames = parse_pyspy(traces, pid, round_index, sources, sample)
    rows["py_threads"].extend(threads)
    rows["frames"].extend(frames)


def _load_watch(
    reader: DumpReader,
    relative: str,
    pid: int,
    round_index: int,
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    data = reader.try_json(relative, required=False)
    if data is None:
        return
    if not isinstance(data, dict) or not isinstance(data.get("threads"), list):
        reader.problem(relative, "unexpected content: not a watch record")
        return
    started, ended = _number(data.get("started")), _number(data.get("ended"))
    fine = set()
    for t in data["threads"]:
        tid = _int(t.get("tid")) if isinstance(t, dict) else None
        if tid is None:
            continue
        fine.add(tid)
        rows["watch"].append(
            {
                "pid": pid,
                "round": round_index,
                "tid": tid,
                "looks": _int(t.get("looks")) or 0,
                "woke": _int(t.get("woke")) or 0,
                "voluntary": _int(t.get("voluntary")),
                "nonvoluntary": _int(t.get("nonvoluntary")),
                "started": started,
                "ended": ended,
            }
        )
    for entry in data.get("all") or []:
        # [tid, voluntary, involuntary] of every thread, looked at twice.
        if not isinstance(entry, list) or len(entry) != 3 or _int(entry[0]) in fine:
            continue
        tid, voluntary, involuntary = (_int(v) for v in entry)
        if tid is None:
            continue
        rows["watch"].append(
            {
                "pid": pid,
                "round": round_index,
                "tid": tid,
                "looks": 2,
                "woke": 1 if (voluntary or 0) > 0 else 0,
                "voluntary": voluntary,
                "nonvoluntary": involuntary,
                "started": started,
                "ended": ended,
            }
        )


# A flight file is the job's own record: bounded like any dump file, and each part capped.
FLIGHT_STEPS_LIMIT = 5000
FLIGHT_OPS_LIMIT = 50_000
FLIGHT_VARIABLES_LIMIT = 20_000
FLIGHT_EVENTS_LIMIT = 1000


def _load_flight(
    reader: DumpReader, relative: str, pid: int, rows: dict[str, list[dict[str, Any]]]
) -> None:
    data = reader.try_json(relative, required=False)
    if data is None:
        return
    if not isinstance(data, dict) or data.get("format") != "postmortem-flight":
        reader.problem(relative, "unexpected content: not a flight recorder file")
        return
    inventory = _dict(data.get("inventory"))
    sync = inventory.get("sync_replicas")
    session = _dict(inventory.get("session"))
    running = _list(data.get("current_step"))
    saving = _list(data.get("saving_since"))
    captures = _list(data.get("captures"))
    rows["flights"].append(
        {
            "pid": pid,
            "started": _f(data.get("started")),
            "written": _f(data.get("written")),
            "trace_every": _i(data.get("trace_every_n_steps")),
            "stall_after_s": _f(data.get("stall_after_s")),
            "running_began": _f(running[0]) if running else None,
            "running_traced": bool(running[3]) if len(running) > 3 else False,
            "saving_began": _f(saving[0]) if saving else None,
            "saving_step": _i(saving[1]) if len(saving) > 1 else None,
            "saving_path": _s(saving[2]) if len(saving) > 2 else "",
            "sync_replicas": bool(sync) if isinstance(sync, dict) else None,
            "replicas_to_aggregate": _i(sync.get("replicas_to_aggregate"))
            if isinstance(sync, dict)
            else None,
            "total_num_replicas": _i(sync.get("total_num_replicas"))
            if isinstance(sync, dict)
            else None,
            "operation_timeout_ms": _i(session.get("operation_timeout_in_ms")),
            "inventory_error": _s(inventory.get("error")),
            "captures": [_s(c) for c in captures[:20]],
        }
    )
    steps = _list(data.get("steps"))
    for step in steps[-FLIGHT_STEPS_LIMIT:]:
        if not isinstance(step, list) or len(step) < 4 or _f(step[0]) is None:
            continue
        rows["flight_steps"].append(
            {
                "pid": pid,
                "started": _f(step[0]),
                "ended": _f(step[1]),
                "global_step": _i(step[2]),
                "traced": _b(step[3]) or False,
            }
        )
    events = _list(data.get("events"))
    for event in events[-FLIGHT_EVENTS_LIMIT:]:
        if not isinstance(event, dict):
            continue
        rows["flight_events"].append(
            {
                "pid": pid,
                "kind": _s(event.get("kind")),
                "time": _f(event.get("time")),
                "step": _i(event.get("step", event.get("last_step"))),
                "path": _s(event.get("path", event.get("dump"))),
                "seconds": _f(event.get("seconds")),
                "what": _s(event.get("what")),
                "began": _f(event.get("began")),
            }
        )
    traces = _list(data.get("traces"))
    budget = FLIGHT_OPS_LIMIT
    for index, trace in enumerate(traces):
        if not isinstance(trace, dict) or not isinstance(trace.get("devices"), list):
            continue
        for device in trace["devices"]:
            nodes = device.get("nodes") if isinstance(device, dict) else None
            if not isinstance(nodes, list):
                continue
            for node in nodes[:budget]:
                if not isinstance(node, list) or len(node) < 5:
                    continue
                rows["flight_ops"].append(
                    {
                        "pid": pid,
                        "trace": index,
                        "step": _i(trace.get("step")),
                        "device": _s(device.get("device")),
                        "node": _s(node[0]),
                        "op": _s(node[1]),
                        "start_us": _i(node[2]),
                        "end_us": _i(node[3]),
                        "label": _s(node[4])[:300],
                    }
                )
            budget -= min(budget, len(nodes))
    variables = _list(inventory.get("variables"))
    for var in variables[:FLIGHT_VARIABLES_LIMIT]:
        if not isinstance(var, dict):
            continue
        shape = _list(var.get("shape"))
        rows["flight_variables"].append(
            {
                "pid": pid,
                "name": _s(var.get("name")),
                "shape": "x".join(str(_i(d)) for d in shape[:16]),
                "dtype": _s(var.get("dtype")),
                "bytes": _i(var.get("bytes")),
                "device": _s(var.get("device")),
            }
        )
    savers = _list(inventory.get("savers"))
    for saver in savers[:20]:
        if isinstance(saver, dict):
            rows["flight_savers"].append(
                {
                    "pid": pid,
                    "sharded": _b(saver.get("sharded")),
                    "save_tensor": _s(saver.get("save_tensor")),
                    "device": _s(saver.get("device")),
                }
            )


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# Typed reads of a dump's values: a value of the wrong type (a dict where a time should be,
# a string where a size should be) becomes missing, never a crash further on.
def _i(value: Any) -> int | None:
    return value if type(value) is int else _int(value)


def _f(value: Any) -> float | None:
    return value if type(value) is float and math.isfinite(value) else _number(value)


def _s(value: Any) -> str:
    if type(value) is str:
        return value
    return "" if value is None or isinstance(value, (dict, list)) else str(value)


def _b(value: Any) -> bool | None:
    return value if type(value) is bool else None


_STRINGS: dict[tuple[Any, ...], list[str]] = {}


def _strings(value: Any) -> list[str] | None:
    """A list of strings; the same list (every process of a host repeats its listening
    addresses in every round) parsed once and shared."""
    if not isinstance(value, list):
        return None
    try:
        key = tuple(value)
        found = _STRINGS.get(key)
    except TypeError:  # unhashable items (a dict in a hostile dump)
        return [str(v) for v in value if isinstance(v, str)]
    if found is None:
        if len(_STRINGS) > 10_000:
            _STRINGS.clear()
        found = _STRINGS[key] = [str(v) for v in value if isinstance(v, str)]
    return found


COLUMN_TYPES: dict[str, tuple[Callable[[Any], Any], ...]] = {
    # files / sockets columns after pid and round, in COLUMNS order
    "files": (_i, _s, _i, _i, _s),
    "sockets": (_i, _s, _s, _s, _s, _i, _i),
}
# The sockets columns read as ints: an equal block may hide a bool or float in them.
_SOCKET_INT_FIELDS = tuple(
    k for k, typed in zip(COLUMNS["sockets"][2:-1], COLUMN_TYPES["sockets"], strict=True)
    if typed is _i
)
# The value types a column of columns (schema 5) may hold to be taken whole: what the
# typed read would leave as it is.
FAST_TYPES: dict[Callable[[Any], Any], set[type]] = {_i: {int, type(None)}, _s: {str}}


def _load_native(
    reader: DumpReader,
    relative: str,
    pid: int,
    round_index: int,
    source: StackSource,
    rows: dict[str, list[dict[str, Any]]],
) -> None:
    data = reader.try_bytes(relative, required=False)
    if data is not None:
        rows["frames"].extend(
            parse_native_text(data.decode(errors="replace"), pid, round_index, source.value)
        )


# What malformed JSON of the right syntax raises when read as the format says.
CONTENT_ERRORS = (
    TypeError,
    ValueError,
    KeyError,
    AttributeError,
    IndexError,
    OverflowError,
    RecursionError,
)


class _Guard:
    """Runs one file's worth of loading as a unit: on unexpected content, whatever it had
    appended is taken back and the file becomes a row in `problems`."""

    def __init__(
        self,
        rows: dict[str, list[dict[str, Any]]],
        columns: dict[str, dict[str, list[Any]]],
        problems: list[dict[str, Any]],
    ) -> None:
        self.problems = problems
        # Every list a load may append to, marked before each file (37,000 files at 1,000
        # processes x 5 rounds): their lengths taken in one pass.
        self.lists = [*rows.values(), *(v for cols in columns.values() for v in cols.values())]

    def run(self, label: str, load: Any, *args: Any) -> bool:
        marks = list(map(len, self.lists))
        try:
            load(*args)
            return True
        except CONTENT_ERRORS as exc:
            for values, mark in zip(self.lists, marks, strict=True):
                del values[mark:]
            self.problems.append({"file": label, "problem": f"unexpected content: {exc!r}"})
            return False


def _add_log_lines(
    rows: dict[str, list[dict[str, Any]]],
    pid: int | None,
    stream: str,
    data: bytes,
    start: int | None = None,
) -> None:
    """One row per line; `offset` is where the line ends in the file (when the capture
    recorded where the tail starts), to place it between the rounds that saw that size."""
    offset = start
    for number, raw in enumerate(data.split(b"\n")):
        if offset is not None:
            offset += len(raw) + 1
        if not raw and number == data.count(b"\n"):
            break  # the empty string after a final newline
        rows["log_lines"].append(
            {
                "pid": pid,
                "stream": stream,
                "line_no": number,
                "text": raw.decode(errors="replace").rstrip("\r"),
                "offset": offset,
            }
        )
