"""Dump directory -> pandas DataFrames. The only reader of the dump format.

`load_dump(path)` checks the manifest's format and schema_version, parses every raw file
that the capture kept (py-spy JSON, pystack/gdb text, procfs JSON, logs, checkpoint
listings, TF events) and validates the columns each frame must have. A file that is
missing or unreadable becomes a row in `problems`, not an exception: a partial dump from
an incident is still worth analyzing. Analysis needs no TensorFlow.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from postmortem.errors import BadDumpError, UnsupportedDumpVersionError

FORMAT_NAME = "postmortem-dump"
SUPPORTED_SCHEMA_VERSIONS = (1,)

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
    "threads": ("pid", "round", "tid", "name", "state", "wchan", "cpu_seconds", "kernel_stack"),
    "py_threads": ("pid", "round", "tid", "thread_name", "active", "owns_gil", "source"),
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
    "log_lines": ("pid", "stream", "line_no", "text"),
    "tf_events": ("address", "plane", "line", "name", "node", "op", "start_ns", "duration_ns"),
    "tf_servers": ("address", "status", "reason", "answered", "idle"),
    "outcomes": ("target", "collector", "status", "round", "reason", "seconds"),
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
    """Rows as plain dicts: the typed way to iterate a frame (itertuples is untyped)."""
    return frame.to_dict("records")  # type: ignore[return-value]


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
    return pd.DataFrame({c: columns[c] for c in COLUMNS[name]})


COLUMNAR = ("threads", "files", "sockets")


def _round_dirs(pdir: Path) -> list[Path]:
    """processes/<pid>/round-* (what glob("round-*") finds, without its per-call cost)."""
    try:
        with os.scandir(pdir) as entries:
            return sorted(pdir / e.name for e in entries if e.name.startswith("round-"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def _read_json(path: Path, problems: list[dict[str, Any]], root: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        problems.append({"file": str(path.relative_to(root)), "problem": "missing"})
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.append({"file": str(path.relative_to(root)), "problem": f"corrupt: {exc}"})
    except OSError as exc:
        problems.append({"file": str(path.relative_to(root)), "problem": str(exc)})
    return None


def read_manifest(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise BadDumpError(f"{path} does not exist.")
    if not path.is_dir():
        raise BadDumpError(f"{path} is not a directory.")
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise BadDumpError(f"{path} has no manifest.json: it is not a postmortem dump.")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadDumpError(
            f"{manifest_path} is corrupt: {exc}.",
            help_text="Capture again; a dump's other files may still be read by hand.",
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise BadDumpError(f"{manifest_path} is not a postmortem dump manifest.")
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise UnsupportedDumpVersionError(
            f"{path} has dump schema_version {version!r}; this postmortem reads "
            f"{', '.join(map(str, SUPPORTED_SCHEMA_VERSIONS))}."
        )
    for key in ("targets", "rounds", "outcomes"):
        if not isinstance(manifest.get(key), list):
            raise BadDumpError(f"{manifest_path} lacks its '{key}' list: the dump is corrupt.")
    return manifest


# -- raw tool output parsers -----------------------------------------------------------


def parse_pyspy(
    raw: Any, pid: int, round_index: int, sources: dict[str, dict[str, str]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    threads, frames = [], []
    for thread in raw:
        if not isinstance(thread, dict):
            continue
        tid = thread.get("os_thread_id") or thread.get("thread_id")
        name = thread.get("thread_name") or ""
        threads.append(
            {
                "pid": pid,
                "round": round_index,
                "tid": tid,
                "thread_name": name,
                "active": bool(thread.get("active")),
                "owns_gil": bool(thread.get("owns_gil")),
                "source": "pyspy",
            }
        )
        for depth, frame in enumerate(thread.get("frames") or []):
            filename = frame.get("filename") or ""
            line = int(frame.get("line") or 0)
            native = not filename.endswith(".py") and "<" not in filename and bool(filename)
            frames.append(
                {
                    "pid": pid,
                    "round": round_index,
                    "tid": tid,
                    "thread_name": name,
                    "depth": depth,
                    "function": frame.get("name") or "",
                    "filename": filename,
                    "line": line,
                    "native": native,
                    "source": "pyspy",
                    "code": sources.get(filename, {}).get(str(line), "").strip(),
                }
            )
    return threads, frames


PYSTACK_THREAD = re.compile(r"^Traceback for thread (\d+) \((.*?)\)")
PYSTACK_FRAME = re.compile(r'^\s+\((C|Python)\) File "(.*?)", line (\d+), in (\S+)')
GDB_THREAD = re.compile(r'^Thread \d+ \(.*?LWP (\d+)\)(?: "(.*?)")?')
GDB_FRAME = re.compile(r"^#\d+\s+(?:0x[0-9a-f]+ in )?(\S+) \(.*?\)(?: at (\S+):(\d+))?")


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
            }
        )
    flush()
    return rows


def _cpu(ticks: int, clk_tck: int) -> float:
    return ticks / (clk_tck or 100)


# -- the loader --------------------------------------------------------------------------


def load_dump(path: Path | str) -> Dump:
    root = Path(path)
    manifest = read_manifest(root)
    problems: list[dict[str, Any]] = []
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in COLUMNS}
    columns: dict[str, dict[str, list[Any]]] = {
        name: {c: [] for c in COLUMNS[name]} for name in COLUMNAR
    }
    sources_by_pid: dict[int, dict[str, dict[str, str]]] = {}
    guard = _Guard(rows, columns, problems)

    def load_target(target: Any) -> None:
        pid = int(target["pid"])
        pdir = root / target.get("dir", f"processes/{pid}")
        info = _read_json(pdir / "process.json", problems, root) or {}
        if not isinstance(info, dict):
            problems.append(
                {
                    "file": f"{pdir.relative_to(root)}/process.json",
                    "problem": "unexpected content: not an object",
                }
            )
            info = {}
        sources = (
            _read_json(pdir / "sources.json", problems, root)
            if (pdir / "sources.json").exists()
            else None
        ) or {}
        sources_by_pid[pid] = sources
        cmdline = info.get("cmdline") or []
        if isinstance(cmdline, str):
            cmdline = cmdline.split()
        cmdline = [str(arg) for arg in cmdline]
        env = info.get("env") if isinstance(info.get("env"), dict) else {}
        rows["processes"].append(
            {
                "pid": pid,
                "comm": info.get("comm", ""),
                "exe": info.get("exe", ""),
                "cwd": info.get("cwd", ""),
                "cmdline": " ".join(cmdline),
                "args": cmdline,
                "uid": info.get("uid"),
                "env": env,
                "python": info.get("python"),
                "tensorflow": info.get("tensorflow"),
                "std_streams": target.get("std_streams") or {},
            }
        )
        for round_dir in _round_dirs(pdir):
            try:
                round_index = int(round_dir.name.split("-")[1])
            except (IndexError, ValueError):
                problems.append(
                    {"file": str(round_dir.relative_to(root)), "problem": "unexpected name"}
                )
                continue
            guard.run(
                str(round_dir.relative_to(root)),
                _load_round,
                root,
                round_dir,
                pid,
                round_index,
                sources,
                rows,
                problems,
                columns,
            )
        for stream in ("stdout", "stderr"):
            log_path = pdir / "logs" / f"{stream}.txt"
            if log_path.exists():
                _add_log_lines(rows, pid, stream, log_path.read_bytes())

    for target in manifest["targets"]:
        guard.run(f"manifest.json target {str(target)[:60]}", load_target, target)

    for entry in manifest.get("logs") or []:
        log_path = root / entry.get("file", "")
        if log_path.is_file():
            _add_log_lines(rows, None, entry.get("path", log_path.name), log_path.read_bytes())

    def load_checkpoint_dir(entry: Any) -> None:
        for listing_path in sorted(
            (root / "checkpoint" / str(entry["index"])).glob("round-*.json")
        ):
            listing = _read_json(listing_path, problems, root)
            if not isinstance(listing, dict):
                continue
            round_index = int(listing_path.stem.split("-")[1])
            files = listing.get("files") or []
            rows["checkpoint_rounds"].append(
                {
                    "dir": entry["dir"],
                    "round": round_index,
                    "time": listing.get("time"),
                    "exists": listing.get("exists"),
                    "listing_timed_out": bool(listing.get("listing_timed_out")),
                    "state_file": listing.get("state_file"),
                    "total_bytes": sum(int(f.get("size") or 0) for f in files),
                    "file_count": len(files),
                }
            )
            rows["checkpoint_files"].extend(
                {
                    "dir": entry["dir"],
                    "round": round_index,
                    "time": listing.get("time"),
                    "name": f.get("name"),
                    "size": f.get("size"),
                    "mtime": f.get("mtime"),
                }
                for f in files
            )

    for entry in manifest.get("checkpoint_dirs") or []:
        guard.run(f"checkpoint_dirs entry {str(entry)[:60]}", load_checkpoint_dir, entry)

    outcomes = manifest["outcomes"]

    def load_tf_server(server: Any) -> None:
        address = server.get("address", "")
        outcome: dict[str, Any] = next(
            (
                o
                for o in outcomes
                if o.get("collector") == "tf_profiler" and o.get("target") == address
            ),
            {},
        )
        events_path = root / "tf" / str(server.get("index")) / "events.json"
        data = _read_json(events_path, problems, root) if events_path.exists() else None
        rows["tf_servers"].append(
            {
                "address": address,
                "status": outcome.get("status", "unknown"),
                "reason": outcome.get("reason", ""),
                "answered": bool(data and data.get("answered", True)),
                "idle": bool(data and data.get("idle")),
            }
        )
        for event in (data or {}).get("events", []):
            rows["tf_events"].append(
                {
                    "address": address,
                    **{key: event.get(key) for key in COLUMNS["tf_events"] if key != "address"},
                }
            )

    for server in manifest.get("tf_servers") or []:
        guard.run(f"tf_servers entry {str(server)[:60]}", load_tf_server, server)

    rows["outcomes"] = [{key: o.get(key) for key in COLUMNS["outcomes"]} for o in outcomes]
    rows["rounds"] = [{key: r.get(key) for key in COLUMNS["rounds"]} for r in manifest["rounds"]]
    rows["problems"] = problems
    frames = {name: _frame(name, data) for name, data in rows.items()}
    frames.update({name: _columns_frame(name, data) for name, data in columns.items()})
    return Dump(root, manifest, frames, sources_by_pid)


def _load_round(
    root: Path,
    round_dir: Path,
    pid: int,
    round_index: int,
    sources: dict[str, dict[str, str]],
    rows: dict[str, list[dict[str, Any]]],
    problems: list[dict[str, Any]],
    columns: dict[str, dict[str, list[Any]]],
) -> None:
    procfs_path = round_dir / "procfs.json"
    if procfs_path.exists():
        data = _read_json(procfs_path, problems, root)
        if isinstance(data, dict):
            clk = int(data.get("clk_tck") or 100)
            io = data.get("io") or {}
            rows["process_rounds"].append(
                {
                    "pid": pid,
                    "round": round_index,
                    "time": data.get("time"),
                    "state": str(data.get("state") or "?"),
                    "cpu_seconds": _cpu(
                        int(data.get("utime") or 0) + int(data.get("stime") or 0), clk
                    ),
                    "num_threads": data.get("num_threads"),
                    "rchar": io.get("rchar"),
                    "wchar": io.get("wchar"),
                    "write_bytes": io.get("write_bytes"),
                    "stat_timeout": bool(data.get("stat_timeout")),
                    "rss_bytes": data.get("rss_bytes"),
                    "host_listening": data.get("host_listening"),
                }
            )
            threads = [
                t
                for t in data.get("threads") or []
                if isinstance(t, dict) and isinstance(t.get("tid"), int)
            ]
            for t in threads:
                t["state"] = str(t.get("state") or "?")
            cols = columns["threads"]
            cols["pid"].extend([pid] * len(threads))
            cols["round"].extend([round_index] * len(threads))
            for key in ("tid", "name", "state"):
                cols[key].extend([t.get(key) for t in threads])
            cols["wchan"].extend([t.get("wchan", "") for t in threads])
            cols["kernel_stack"].extend([" <- ".join(t.get("kernel_stack") or []) for t in threads])
            cols["cpu_seconds"].extend(
                [_cpu(int(t.get("utime") or 0) + int(t.get("stime") or 0), clk) for t in threads]
            )
            for name in ("files", "sockets"):
                items = data.get(name) or []
                cols = columns[name]
                cols["pid"].extend([pid] * len(items))
                cols["round"].extend([round_index] * len(items))
                for key in COLUMNS[name][2:]:
                    cols[key].extend([item.get(key) for item in items])
    pyspy_path = round_dir / "pyspy.json"
    if pyspy_path.exists():
        raw = pyspy_path.read_bytes()
        try:
            traces = json.loads(raw) if raw.strip() else None
        except json.JSONDecodeError as exc:
            problems.append(
                {"file": str(pyspy_path.relative_to(root)), "problem": f"corrupt: {exc}"}
            )
            traces = None
        if isinstance(traces, list):
            threads, frames = parse_pyspy(traces, pid, round_index, sources)
            rows["py_threads"].extend(threads)
            rows["frames"].extend(frames)
    for name, source in (("native.pystack.txt", "pystack"), ("native.gdb.txt", "gdb")):
        native_path = round_dir / name
        if native_path.exists():
            rows["frames"].extend(
                parse_native_text(native_path.read_text(errors="replace"), pid, round_index, source)
            )


# What malformed JSON of the right syntax raises when read as the format says.
CONTENT_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError)


class _Guard:
    """Runs one file's worth of loading as a unit: on unexpected content, whatever it had
    appended is taken back and the file becomes a row in `problems`."""

    def __init__(
        self,
        rows: dict[str, list[dict[str, Any]]],
        columns: dict[str, dict[str, list[Any]]],
        problems: list[dict[str, Any]],
    ) -> None:
        self.rows, self.columns, self.problems = rows, columns, problems

    def run(self, label: str, load: Any, *args: Any) -> bool:
        row_marks = {name: len(v) for name, v in self.rows.items()}
        col_marks = {(n, c): len(v) for n, cols in self.columns.items() for c, v in cols.items()}
        try:
            load(*args)
            return True
        except CONTENT_ERRORS as exc:
            for name, values in self.rows.items():
                del values[row_marks[name] :]
            for (name, column), mark in col_marks.items():
                del self.columns[name][column][mark:]
            self.problems.append({"file": label, "problem": f"unexpected content: {exc!r}"})
            return False


def _add_log_lines(
    rows: dict[str, list[dict[str, Any]]], pid: int | None, stream: str, data: bytes
) -> None:
    for number, text in enumerate(data.decode(errors="replace").splitlines()):
        rows["log_lines"].append({"pid": pid, "stream": stream, "line_no": number, "text": text})
