"""Does the job move? Steps, saves and checkpoints over the capture's window.

A stuck job and a busy one can look alike in three stack samples; their logs and
checkpoint directories do not. Each log line gets a time: its own timestamp, or, for a
line without one (TensorFlow's `INFO:tensorflow:` lines have none), the window between
the two rounds whose recorded log sizes bracket where the line ends in the file. From the
steps each process logged in the window come its step rate and how long ago it last
stepped; from the checkpoint directory, when the last checkpoint was written and how
often they are.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from postmortem.analysis import logs as log_facts
from postmortem.loading import records
from postmortem.model import CheckpointProgress, LogProgress, SaveCadence

# A log is watched for progress from the capture's first round to its end.
MIN_WINDOW_S = 0.5


@dataclass(frozen=True)
class Placed:
    time: float | None  # Unix seconds; None when the line carries no time and no offset
    estimated: bool  # placed between rounds by its offset, not read from a timestamp
    during: bool | None  # written during the capture (None: cannot tell)


def place_lines(
    lines: pd.DataFrame,
    sizes: pd.DataFrame,
    rounds: list[tuple[int, float]],
    ended_at: float | None,
    year: int,
    clock_offsets: dict[int, float] | None = None,
) -> dict[tuple[Any, str, int], Placed]:
    """(pid, stream, line_no) -> when the line was written, as well as the dump can tell.
    `clock_offsets`: seconds to add to the time a process's log lines carry (its host's
    clock against the capturing host's, in a dump of several hosts)."""
    clock_offsets = clock_offsets or {}
    start = rounds[0][1] if rounds else None
    bounds: dict[tuple[Any, str], list[tuple[float, int]]] = {}
    if not sizes.empty:
        round_time = dict(rounds)
        for row in records(sizes):
            rnd, size = row["round"], row["size"]
            when = row["time"] if _finite(row["time"]) else round_time.get(rnd)
            if when is None or size is None or not _finite(size):
                continue
            log = (_key(row["pid"]), str(row["stream"]))
            bounds.setdefault(log, []).append((float(when), int(size)))
    for values in bounds.values():
        values.sort()
    placed: dict[tuple[Any, str, int], Placed] = {}
    pending: dict[tuple[Any, str, float, float], list[tuple[Any, str, int]]] = {}
    cache: dict[tuple[str, ...], float] = {}
    for row in records(lines):
        key = (_key(row["pid"]), str(row["stream"]), int(row["line_no"]))
        stamped = log_facts.parse_log_time_cached(str(row["text"]), year, cache)
        if stamped is not None:
            stamped += clock_offsets.get(key[0], 0.0) if key[0] is not None else 0.0
            placed[key] = Placed(stamped, False, None if start is None else stamped >= start)
            continue
        offset = row["offset"]
        known = bounds.get(key[:2])
        if not known or not _finite(offset):
            placed[key] = Placed(None, False, None)
            continue
        # The first round whose recorded size reaches the line's end: written before it.
        later = next((i for i, (_, size) in enumerate(known) if size >= offset), None)
        if later == 0:
            placed[key] = Placed(None, False, False)  # before the capture began
            continue
        low = known[later - 1][0] if later is not None else known[-1][0]
        high = known[later][0] if later is not None else (ended_at or known[-1][0])
        pending.setdefault((key[0], key[1], low, max(low, high)), []).append(key)
    # Lines that landed in the same window share it evenly, in file order.
    for (_pid, _stream, low, high), keys in pending.items():
        for index, key in enumerate(keys):
            placed[key] = Placed(low + (high - low) * (index + 1) / (len(keys) + 1), True, True)
    return placed


def _key(pid: Any) -> Any:
    return None if pid is None or (isinstance(pid, float) and math.isnan(pid)) else int(pid)


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def step_progress(
    role: str,
    pid: int | None,
    source: str,
    texts: list[tuple[str, Placed]],
    window: tuple[float, float],
) -> LogProgress | None:
    """From a log's lines (in file order, each placed in time), its steps in the window."""
    start, end = window
    points: list[tuple[float | None, int, bool | None]] = []
    rates: list[float] = []
    for text, placed in texts:
        rate = log_facts.rate_of(text)
        if rate is not None and placed.during:
            rates.append(rate)
        step = log_facts.step_of(text)
        if step is not None:
            points.append((placed.time, step, placed.during))
    if not points and not rates:
        return None
    before = [s for _, s, during in points if during is False]
    inside = [s for _, s, during in points if during]
    if not inside:
        advanced = 0
    elif before:
        advanced = max(0, max(inside) - before[-1])
    else:
        # No step line before the window: a step line written in it is a step done in it.
        advanced = max(1, max(inside) - min(inside))
    window_s = max(end - start, MIN_WINDOW_S)
    rate = statistics.median(rates) if rates else (advanced / window_s if advanced > 0 else None)
    timed = [t for t, _, _ in points if t is not None]
    gaps = [b - a for a, b in zip(timed, timed[1:], strict=False) if b > a]
    last_time = timed[-1] if timed else None
    return LogProgress(
        role=role,
        pid=pid,
        source=source,
        steps_in_window=max(0, advanced),
        step_lines_in_window=len(inside),
        rate=rate,
        last_step=points[-1][1] if points else None,
        last_step_age_s=max(0.0, end - last_time) if last_time is not None else None,
        interval_s=statistics.median(gaps) if gaps else None,
        window_s=window_s,
    )


def save_cadence(
    progress: CheckpointProgress, files: pd.DataFrame, window: tuple[float, float]
) -> SaveCadence | None:
    if files.empty:
        return None
    start, end = window
    mine = files[(files["dir"] == progress.dir) & files["name"].astype(str).str.endswith(".index")]
    if mine.empty:
        return None
    mtimes = sorted({float(m) for m in mine.groupby("name")["mtime"].max() if _finite(m)})
    if not mtimes:
        return None
    gaps = [b - a for a, b in zip(mtimes, mtimes[1:], strict=False)]
    return SaveCadence(
        dir=progress.dir,
        saves=len(mtimes),
        last_save_age_s=max(0.0, end - mtimes[-1]),
        interval_s=statistics.median(gaps) if gaps else None,
        during_capture=sum(1 for m in mtimes if m >= start),
    )


def overdue(progress: LogProgress) -> bool:
    """Silent for much longer than it used to log steps: positive evidence of a stall."""
    if progress.last_step_age_s is None or progress.interval_s is None:
        return False
    return progress.last_step_age_s > max(3 * progress.interval_s, progress.window_s)
