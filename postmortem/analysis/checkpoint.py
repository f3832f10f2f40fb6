"""Is the save writing? Checkpoint directories across rounds, and each process's writes.

`checkpoint_progress` follows every watched directory (total and in-progress bytes per
round, listings that did not return, the last checkpoint the state file names);
`write_rates` measures each process's own writes from /proc/PID/io. Together they say
whether bytes flow: the line between a slow save and a stuck one.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from postmortem.model import CheckpointFile, CheckpointProgress

TEMP_FILE = re.compile(r"_temp|\.tempstate|tmp")
LAST_CHECKPOINT = re.compile(r'^model_checkpoint_path:\s*"(.*)"', re.MULTILINE)
MIN_WRITE_RATE = 256 * 1024  # bytes/s: more than logging, a stream of checkpoint data
MAX_FILES = 10  # files followed per directory: the largest


def checkpoint_progress(rounds: pd.DataFrame, files: pd.DataFrame) -> list[CheckpointProgress]:
    out: list[CheckpointProgress] = []
    if rounds.empty:
        return out
    for directory, grp in rounds.sort_values("round").groupby("dir"):
        order = [int(r) for r in grp["round"]]
        mine = files[files["dir"] == directory] if not files.empty else files
        temp_sizes: list[int] = []
        tracked: list[CheckpointFile] = []
        if not mine.empty:
            temp = mine[mine["name"].astype(str).str.contains(TEMP_FILE)]
            by_round = temp.groupby("round")["size"].sum() if not temp.empty else None
            if by_round is not None:
                temp_sizes = [int(by_round.get(r, 0)) for r in order]
            biggest = (
                mine.groupby("name")["size"].max().sort_values(ascending=False).head(MAX_FILES)
            )
            for name in biggest.index:
                sizes = mine[mine["name"] == name].set_index("round")["size"]
                tracked.append(
                    CheckpointFile(
                        str(name), tuple(_size(sizes.get(r)) if r in sizes else None for r in order)
                    )
                )
        state = next((str(s) for s in reversed(list(grp["state_file"])) if _text(s)), "")
        match = LAST_CHECKPOINT.search(state)
        exists = [e for e in grp["exists"] if isinstance(e, bool)]
        out.append(
            CheckpointProgress(
                dir=str(directory),
                rounds=tuple(order),
                times=tuple(_time(t) for t in grp["time"]),
                sizes=tuple(int(v) for v in grp["total_bytes"]),
                temp_sizes=tuple(temp_sizes),
                timed_out_rounds=tuple(
                    r for r, t in zip(order, grp["listing_timed_out"], strict=True) if t
                ),
                last_checkpoint=match.group(1) if match else "",
                files=tuple(tracked),
                exists=exists[-1] if exists else None,
            )
        )
    return out


def write_rates(process_rounds: pd.DataFrame) -> dict[int, float]:
    """pid -> bytes/s of write_bytes (or wchar) across the capture."""
    out: dict[int, float] = {}
    if process_rounds.empty:
        return out
    ordered = process_rounds.sort_values(["pid", "round"], kind="stable")
    series: dict[int, list[tuple[Any, Any, Any]]] = {}
    columns = [ordered[c].tolist() for c in ("pid", "time", "wchar", "write_bytes")]
    for pid, time, wchar, written in zip(*columns, strict=True):
        series.setdefault(int(pid), []).append((time, wchar, written))
    for pid, rows in series.items():
        if len(rows) < 2 or any(pd.isna(r[0]) for r in rows):
            continue
        column = 1 if all(pd.notna(r[1]) for r in rows) else 2
        if any(pd.isna(r[column]) for r in rows):
            continue
        span = float(rows[-1][0] - rows[0][0]) or 1.0
        out[pid] = float(rows[-1][column] - rows[0][column]) / span
    return out


def previous_size(files: pd.DataFrame, directory: str, prefix: str) -> int:
    """Bytes of the last complete checkpoint (the one the state file names), in the last
    round: how big the save in progress will be."""
    if files.empty or not prefix:
        return 0
    name = prefix.rsplit("/", 1)[-1]
    mine = files[files["dir"] == directory]
    if mine.empty:
        return 0
    last = mine[mine["round"] == mine["round"].max()]
    return int(last[last["name"].astype(str).str.startswith(name)]["size"].fillna(0).sum())


def _size(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not pd.isna(value) else None
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)
