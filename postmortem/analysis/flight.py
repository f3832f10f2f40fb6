"""What a job's flight recorder (postmortem.recorder) says about itself: its steps and when
they stopped, its saves and the one that never ended, its last traced steps per device, the
tensors it pulls across the network, its variables and its saver.

A session.run that hangs never returns its RunMetadata: the traces here are of the steps
before the hang. Times are the job host's wall clock, as the capture's rounds are.
"""

from __future__ import annotations

import re
import statistics
from typing import Any

import pandas as pd

from collectors import layout
from postmortem.analysis.progress import MIN_WINDOW_S
from postmortem.analysis.roles import role_from_device
from postmortem.loading import records
from postmortem.model import (
    FlightRecord,
    LogProgress,
    RecordedSave,
    RecordedStall,
    RecordedStep,
    RecordedVariable,
    Risk,
    TracedOp,
    TracedStep,
    Transfer,
)

GIB_2 = 2**31  # gRPC/protobuf's message limit: one tensor this big cannot cross (tf#6117)
RECENT_STEPS = 100  # the typical step time is the median of this many recent steps
STOP_FACTOR = 10.0  # no step for this many typical steps means steps stopped...
MIN_STOP_S = 10.0  # ... and never less than this (a save between steps takes seconds)
MAX_OPS_PER_TRACE = 5000  # the longest ops of a traced step kept in the model
MAX_VARIABLES = 200  # the largest variables kept in the model
MAX_STEPS = 2000

# TensorFlow's RecvTensor timeline label:
# "[1024B] [6.8Mb/s] edge_9_MatMul/ReadVariableOp from /job:ps/.../CPU:0 to /job:worker/..."
RECV_LABEL = re.compile(r"^\[(\d+)B\].*?\s(\S+)\s+from\s+(\S+)\s+to\s+(\S+)")


def flight_records(
    frames: dict[str, pd.DataFrame], labels: dict[int, str], capture_end: float | None
) -> list[FlightRecord]:
    flights = frames["flights"]
    if flights.empty:
        return []
    by_pid = {
        # Not dict(groupby): a GroupBy's `keys` attribute is the column name, not a method.
        name: {pid: grp for pid, grp in frames[name].groupby("pid")}  # noqa: C416
        for name in ("flight_steps", "flight_events", "flight_ops", "flight_variables")
        if not frames[name].empty
    }
    savers = frames["flight_savers"]
    out = []
    for row in records(flights):
        pid = int(row["pid"])

        def mine(name: str, pid: int = pid) -> pd.DataFrame:
            found = by_pid.get(name, {}).get(pid)
            return found if found is not None else frames[name].iloc[0:0]

        my_savers = savers[savers["pid"] == pid] if not savers.empty else savers
        out.append(
            _record(
                row,
                labels.get(pid, f"pid:{pid}"),
                mine("flight_steps"),
                mine("flight_events"),
                mine("flight_ops"),
                mine("flight_variables"),
                my_savers,
                capture_end,
            )
        )
    return out


def _record(
    row: dict[str, Any],
    role: str,
    steps_df: pd.DataFrame,
    events_df: pd.DataFrame,
    ops_df: pd.DataFrame,
    variables_df: pd.DataFrame,
    savers_df: pd.DataFrame,
    capture_end: float | None,
) -> FlightRecord:
    pid = int(row["pid"])
    written = _num(row["written"])
    reference = capture_end if capture_end is not None else written
    steps = [
        RecordedStep(
            started=float(s["started"]),
            seconds=float(s["ended"]) - float(s["started"])
            if _num(s["ended"]) is not None
            else None,
            global_step=_int(s["global_step"]),
            traced=bool(s["traced"]),
        )
        for s in records(steps_df.sort_values("started"))
    ][-MAX_STEPS:]
    durations = [s.seconds for s in steps[-RECENT_STEPS:] if s.seconds is not None]
    typical = statistics.median(durations) if durations else None
    running = None
    if _num(row["running_began"]) is not None:
        running = RecordedStep(float(row["running_began"]), None, None, bool(row["running_traced"]))
    ended = [s.started + s.seconds for s in steps if s.seconds is not None]
    last_end = max(ended) if ended else None
    stopped = None
    if last_end is not None and reference is not None:
        quiet = max(STOP_FACTOR * (typical or 0.0), MIN_STOP_S)
        if reference - last_end > quiet:
            stopped = last_end
    return FlightRecord(
        pid=pid,
        role=role,
        source=layout.flight_file(pid),
        started=_num(row["started"]),
        written=written,
        steps=tuple(steps),
        typical_step_s=typical,
        steps_stopped=stopped,
        running_step=running,
        saves=tuple(_saves(events_df, row, reference)),
        stalls=tuple(_stalls(events_df)),
        traces=tuple(_traces(ops_df, steps)),
        transfers=tuple(_transfers(ops_df)),
        variables=tuple(_variables(variables_df)),
        variable_count=len(variables_df),
        variable_bytes=int(sum(_int(b) or 0 for b in variables_df["bytes"]))
        if not variables_df.empty
        else 0,
        saver_sharded=_saver_sharded(savers_df),
        saver_devices=tuple(dict.fromkeys(str(d) for d in savers_df["device"] if d))
        if not savers_df.empty
        else (),
        sync_replicas=row["sync_replicas"] if isinstance(row["sync_replicas"], bool) else None,
        replicas_to_aggregate=_int(row["replicas_to_aggregate"]),
        operation_timeout_ms=_int(row["operation_timeout_ms"]),
        auto_captures=tuple(str(c) for c in row["captures"] or ()),
    )


def _saves(
    events: pd.DataFrame, row: dict[str, Any], reference: float | None
) -> list[RecordedSave]:
    """Each save-began paired with the save-ended after it; the last one may be open."""
    out: list[RecordedSave] = []
    pending: tuple[float, int | None, str] | None = None
    for e in records(events.sort_values("time", kind="stable")) if not events.empty else []:
        when = _num(e["time"])
        if when is None:
            continue
        if e["kind"] == "save-began":
            pending = (when, _int(e["step"]), str(e["path"]))
        elif e["kind"] == "save-ended" and pending is not None:
            out.append(RecordedSave(pending[0], when, when - pending[0], pending[1], pending[2]))
            pending = None
    began = _num(row["saving_began"])
    if began is not None:
        # The recorder's own word that a save is under way (the event ring may have lost it).
        pending = (began, _int(row["saving_step"]), str(row["saving_path"] or ""))
    if pending is not None:
        so_far = reference - pending[0] if reference is not None else None
        out.append(RecordedSave(pending[0], None, so_far, pending[1], pending[2]))
    return out


def _stalls(events: pd.DataFrame) -> list[RecordedStall]:
    if events.empty:
        return []
    captures = [
        (float(e["began"]), str(e["path"] or ""))
        for e in records(events[events["kind"] == "capture-started"])
        if _num(e["began"]) is not None
    ]
    out = []
    for e in records(events[events["kind"] == "stall"].sort_values("time")):
        began, reported = _num(e["began"]), _num(e["time"])
        if began is None or reported is None:
            continue
        dump = next((path for when, path in captures if abs(when - began) < 1e-3), "")
        out.append(RecordedStall(str(e["what"]), began, reported, _int(e["step"]), dump))
    return out


def _traces(ops: pd.DataFrame, steps: list[RecordedStep]) -> list[TracedStep]:
    if ops.empty:
        return []
    out = []
    for _, grp in ops.groupby("trace", sort=True):
        rows = [r for r in records(grp) if _int(r["start_us"]) is not None]
        if not rows:
            continue
        rows.sort(key=lambda r: (_int(r["end_us"]) or 0) - (_int(r["start_us"]) or 0))
        kept = rows[-MAX_OPS_PER_TRACE:]
        traced = [_op(r) for r in sorted(kept, key=lambda r: (str(r["device"]), r["start_us"]))]
        start = min(op.start for op in traced)
        end = max(op.start + op.duration_s for op in traced)
        out.append(
            TracedStep(
                global_step=_int(rows[0]["step"]),
                started=start,
                ended=end,
                ops=tuple(traced),
                ops_omitted=len(rows) - len(kept),
            )
        )
    return out


def _op(r: dict[str, Any]) -> TracedOp:
    start = int(r["start_us"])
    end = _int(r["end_us"]) or start
    label = str(r["label"] or "")
    size, source = None, ""
    match = RECV_LABEL.match(label)
    if match:
        size, source = int(match.group(1)), match.group(3)
    device = str(r["device"])
    node = str(r["node"])
    return TracedOp(
        device=device,
        role=role_from_device(device),
        node=node,
        op=str(r["op"] or "") or ("RecvTensor" if node == "RecvTensor" else ""),
        start=start / 1e6,
        duration_s=max(0, end - start) / 1e6,
        label=label,
        bytes=size,
        source_device=source,
    )


def _transfers(ops: pd.DataFrame) -> list[Transfer]:
    """RecvTensor transfers of every traced step, by source and destination device."""
    if ops.empty:
        return []
    totals: dict[tuple[str, str], list[Any]] = {}
    for label in ops["label"]:
        match = RECV_LABEL.match(str(label or ""))
        if not match:
            continue
        size, source, destination = int(match.group(1)), match.group(3), match.group(4)
        entry = totals.setdefault((source, destination), [0, 0, 0, ""])
        entry[0] += 1
        entry[1] += size
        if size > entry[2]:
            entry[2], entry[3] = size, str(label)
    out = [Transfer(s, d, c, total, big, edge) for (s, d), (c, total, big, edge) in totals.items()]
    return sorted(out, key=lambda t: (-t.largest_bytes, t.source_device))


def _variables(variables: pd.DataFrame) -> list[RecordedVariable]:
    if variables.empty:
        return []
    rows = sorted(records(variables), key=lambda r: -(_int(r["bytes"]) or 0))[:MAX_VARIABLES]
    return [
        RecordedVariable(
            name=str(r["name"]),
            shape=str(r["shape"] or ""),
            dtype=str(r["dtype"] or ""),
            bytes=_int(r["bytes"]),
            device=str(r["device"] or ""),
            role=role_from_device(str(r["device"] or "")),
        )
        for r in rows
    ]


def _saver_sharded(savers: pd.DataFrame) -> bool | None:
    values = [v for v in savers["sharded"] if isinstance(v, bool)] if not savers.empty else []
    if not values:
        return None
    return all(values)


# -- what the rules and the incident take from the records ------------------------------------


def progress(record: FlightRecord, window: tuple[float, float]) -> LogProgress | None:
    """The steps the recorder saw end during the capture, as a log's progress would be."""
    if not record.steps:
        return None
    start, end = window
    done = [s for s in record.steps if s.seconds is not None]
    if not done:
        return None
    ends = [s.started + (s.seconds or 0.0) for s in done]
    inside = [s for s, e in zip(done, ends, strict=True) if start <= e <= end]
    covered_to = min(end, record.written) if record.written is not None else end
    window_s = max(covered_to - start, MIN_WINDOW_S)
    starts = [s.started for s in done[-RECENT_STEPS:]]
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > a]
    last = done[-1]
    return LogProgress(
        role=record.role,
        pid=record.pid,
        source=record.source,
        steps_in_window=len(inside),
        step_lines_in_window=len(inside),
        rate=len(inside) / window_s if inside else None,
        last_step=last.global_step if last.global_step is not None else len(record.steps),
        # As of the file's last write: the recorder writes at least every 2 s, so a job
        # whose steps stopped shows an age that grows; what happened after it is unknown.
        last_step_age_s=max(0.0, covered_to - max(ends)),
        interval_s=statistics.median(gaps) if gaps else None,
        window_s=max(end - start, MIN_WINDOW_S),
        recorded=True,
    )


def oversized(record: FlightRecord) -> list[RecordedVariable]:
    """Variables of 2 GiB or more on a ps that a non-sharded saver pulls whole through gRPC."""
    if record.saver_sharded is not False:
        return []
    return [
        v
        for v in record.variables
        if v.bytes is not None and v.bytes >= GIB_2 and (v.role or "").startswith("ps:")
    ]


def risks(records_: list[FlightRecord]) -> list[Risk]:
    out = []
    seen: set[str] = set()
    for record in records_:
        for var in oversized(record):
            if var.name in seen:
                continue
            seen.add(var.name)
            out.append(
                Risk(
                    f"`{var.name}` ({(var.bytes or 0) / 2**30:.2f} GiB, {var.dtype} "
                    f"{var.shape}) lives on {var.role} and the saver is not sharded: each "
                    f"save pulls it to {_devices(record)} in one gRPC message, over the "
                    "2 GiB limit. Older TensorFlow hangs there without an error; newer fails "
                    "the save",
                    "Build the Saver with sharded=True, or partition the variable "
                    "(partitioner=tf.compat.v1.fixed_size_partitioner(N)).",
                    record.source,
                    record.role,
                )
            )
    no_deadline = [r for r in records_ if r.operation_timeout_ms == 0]
    if no_deadline:
        roles = ", ".join(sorted({r.role for r in no_deadline})[:8])
        out.append(
            Risk(
                f"the sessions of {roles} have no deadline (operation_timeout_in_ms is 0): a "
                "session.run that waits on a lost peer waits forever instead of raising",
                "Set tf.compat.v1.ConfigProto(operation_timeout_in_ms=...) longer than the "
                "slowest save, so a hang raises DeadlineExceededError and the job can retry.",
                no_deadline[0].source,
                no_deadline[0].role,
            )
        )
    return out


def _devices(record: FlightRecord) -> str:
    roles = [role_from_device(d) or d for d in record.saver_devices if d]
    return ", ".join(roles) if roles else "the saving worker"


def _duration(started: Any, ended: Any) -> float | None:
    begin, end = _num(started), _num(ended)
    return end - begin if begin is not None and end is not None else None


def _num(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _int(value: Any) -> int | None:
    number = _num(value)
    return int(number) if number is not None else None
