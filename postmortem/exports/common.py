"""What the exports and the report read from a loaded dump: stack samples and events.

Pure functions of the loaded DataFrames. They pick and reshape what was captured (a
stack per thread and round, log lines worth a mark on a timeline, profiler events); they
never judge it: verdicts come from `postmortem.analysis`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pandas as pd

from postmortem.analysis.facts import CREATE_SESSION_WAIT, GRPC_UNREACHABLE, OVERSIZED, SAVE_LINE
from postmortem.loading import Dump

Seconds = float  # Unix time
STACK_SOURCES = ("pyspy", "pystack", "gdb")

ERROR_LINE = re.compile(
    r"\b(?:ERROR|CRITICAL|FATAL)\b|^[EF]\d{4} |Traceback \(most recent call last\)|"
    r"\b\w*(?:Error|Exception):"
)
# A step line names a step; "step" alone in prose ("stepping") must not count.
STEP_LINE = re.compile(r"\b(?:global[_ ]step|step)\b\s*[:=#]?\s*(\d+)", re.IGNORECASE)
# 2024-05-01 12:00:00,123 (Python logging) / 2024-05-01 12:00:00.123456: (TF C++)
ISO_TIME = re.compile(r"^\[?(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[,.](\d{1,9}))?")
# I0501 12:00:00.123456 (absl / glog): no year, taken from the capture.
GLOG_TIME = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")
LOG_KINDS = ("error", "waiting", "save", "step")


@dataclass(frozen=True)
class FrameRef:
    function: str
    filename: str
    line: int
    native: bool

    @property
    def short_file(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        if not self.filename:
            return self.function
        return (
            f"{self.function} ({self.short_file}:{self.line})"
            if self.line
            else f"{self.function} ({self.short_file})"
        )


@dataclass(frozen=True)
class StackSample:
    """One thread's stack in one round, outermost frame first."""

    pid: int
    round: int
    tid: int
    thread_name: str
    source: str
    frames: tuple[FrameRef, ...]


@dataclass(frozen=True)
class LogEvent:
    pid: int | None
    stream: str
    line_no: int
    text: str
    kind: str  # one of LOG_KINDS
    time: Seconds | None  # None when the line carries no timestamp


def records(frame: pd.DataFrame) -> Iterator[Any]:
    """Rows as named tuples; typed Any because a frame's columns are not typed."""
    return iter(frame.itertuples())


def pick_stack_source(frames: pd.DataFrame, source: str = "auto") -> str | None:
    """The stack source to show: py-spy when the dump has it, else the native dump."""
    present = set(frames["source"].unique()) if not frames.empty else set()
    if source != "auto":
        return source if source in present else None
    return next((s for s in STACK_SOURCES if s in present), None)


def stack_samples(frames: pd.DataFrame, source: str = "auto") -> list[StackSample]:
    chosen = pick_stack_source(frames, source)
    if chosen is None:
        return []
    rows = frames[frames["source"] == chosen]
    samples = []
    key: Any
    for key, grp in rows.groupby(["pid", "round", "tid"], sort=True):
        pid, rnd, tid = key
        ordered = grp.sort_values("depth", ascending=False)  # depth 0 is the innermost
        refs = tuple(
            FrameRef(str(r.function), str(r.filename or ""), int(r.line or 0), bool(r.native))
            for r in records(ordered)
        )
        name = str(ordered["thread_name"].iloc[0] or "")
        samples.append(StackSample(int(pid), int(rnd), int(tid), name, chosen, refs))
    return samples


def process_labels(dump: Dump, roles: Mapping[int, str] | None = None) -> dict[int, str]:
    """pid -> "worker:0 (pid 123)" or "python (pid 123)" when no role is known."""
    labels = {}
    for row in records(dump.processes):
        pid = int(row.pid)
        role = (roles or {}).get(pid, "")
        if role and not role.startswith("pid:"):
            labels[pid] = f"{role} (pid {pid})"
        else:
            labels[pid] = f"{row.comm or 'process'} (pid {pid})"
    return labels


def classify_log_line(text: str) -> str | None:
    if OVERSIZED.search(text) or GRPC_UNREACHABLE.search(text) or ERROR_LINE.search(text):
        return "error"
    if CREATE_SESSION_WAIT.search(text):
        return "waiting"
    if SAVE_LINE.search(text):
        return "save"
    if STEP_LINE.search(text):
        return "step"
    return None


def parse_log_time(text: str, year: int) -> Seconds | None:
    """Unix time of a log line's leading timestamp, read as local time; None if absent."""
    match = ISO_TIME.match(text)
    if match:
        y, mo, d, h, mi, s, frac = match.groups()
    else:
        match = GLOG_TIME.match(text)
        if not match:
            return None
        mo, d, h, mi, s, frac = match.groups()
        y = str(year)
    try:
        moment = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
    except ValueError:
        return None
    fraction = float(f"0.{frac}") if frac else 0.0
    return moment.timestamp() + fraction


def capture_year(dump: Dump) -> int:
    started = dump.manifest.get("started_at")
    moment = float(started) if isinstance(started, (int, float)) else time.time()
    return datetime.fromtimestamp(moment).year


def log_events(dump: Dump) -> list[LogEvent]:
    """Log lines worth a mark on a timeline: errors, session waits, saves, steps."""
    year = capture_year(dump)
    events = []
    for row in records(dump.log_lines):
        text = str(row.text)
        kind = classify_log_line(text)
        if kind is None:
            continue
        pid = None if pd.isna(row.pid) else int(row.pid)
        events.append(
            LogEvent(pid, str(row.stream), int(row.line_no), text, kind, parse_log_time(text, year))
        )
    return events


def log_track(event: LogEvent, labels: Mapping[int, str]) -> str:
    if event.pid is None:
        return f"log {event.stream}"
    return f"{labels.get(event.pid, f'pid {event.pid}')} {event.stream}"


def tf_event_rows(dump: Dump) -> Iterable[Any]:
    events = dump.tf_events
    if events.empty:
        return []
    return records(events.sort_values("start_ns"))


def round_spans(dump: Dump) -> list[tuple[int, Seconds, Seconds]]:
    """(index, started_at, ended_at) of each capture round."""
    spans = []
    for r in records(dump.rounds):
        if r.started_at is None or pd.isna(r.started_at):
            continue
        end = r.ended_at if r.ended_at is not None and not pd.isna(r.ended_at) else r.started_at
        spans.append((int(r.index), float(r.started_at), float(end)))
    return spans
