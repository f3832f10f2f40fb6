"""TF profiler events, log events and capture rounds -> Chrome / Perfetto trace JSON.

The Trace Event Format: `traceEvents` of complete (`X`, with `dur`), instant (`i`) and
metadata (`M`) events; `ts` and `dur` in microseconds. Each TF server is drawn as the
process that listens on its address when the dump holds it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from postmortem.exports.common import LogEvent, round_spans, tf_event_rows
from postmortem.loading import Dump

CAPTURE_PID = 0  # the capture's own rounds
SYNTHETIC_PID_BASE = 10_000_000  # TF servers whose process the dump does not hold


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


def trace_document(
    dump: Dump,
    log_events: list[LogEvent],
    labels: Mapping[int, str],
    pid_by_address: Mapping[str, int],
) -> dict[str, Any]:
    events: list[dict[str, Any]] = []
    named: set[tuple[int, int]] = set()
    process_named: set[int] = set()

    def name_process(pid: int, name: str) -> None:
        if pid not in process_named:
            process_named.add(pid)
            events.append(
                {
                    "name": "process_name",
                    "ph": "M",
                    "ts": 0,
                    "pid": pid,
                    "tid": 0,
                    "args": {"name": name},
                }
            )

    def name_thread(pid: int, tid: int, name: str) -> None:
        if (pid, tid) not in named:
            named.add((pid, tid))
            events.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "ts": 0,
                    "pid": pid,
                    "tid": tid,
                    "args": {"name": name},
                }
            )

    name_process(CAPTURE_PID, "postmortem capture")
    name_thread(CAPTURE_PID, 0, "rounds")
    for index, start, end in round_spans(dump):
        events.append(
            {
                "name": f"round {index}",
                "cat": "capture",
                "ph": "X",
                "ts": _us(start),
                "dur": _us(end - start),
                "pid": CAPTURE_PID,
                "tid": 0,
                "args": {},
            }
        )

    server_pids: dict[str, int] = {}
    line_tids: dict[tuple[str, str, str], int] = {}
    dropped_tf = 0
    for row in tf_event_rows(dump):
        if row.start_ns is None or pd.isna(row.start_ns):
            dropped_tf += 1
            continue
        address = str(row.address)
        if address not in server_pids:
            server_pids[address] = pid_by_address.get(address) or SYNTHETIC_PID_BASE + len(
                server_pids
            )
            pid = server_pids[address]
            name_process(pid, labels.get(pid, f"TF server {address}"))
        pid = server_pids[address]
        key = (address, str(row.plane), str(row.line))
        if key not in line_tids:
            line_tids[key] = 1000 + len(line_tids)
            name_thread(pid, line_tids[key], f"{row.plane} / {row.line}")
        duration = (
            row.duration_ns if row.duration_ns is not None and not pd.isna(row.duration_ns) else 0
        )
        events.append(
            {
                "name": str(row.name or row.op or "?"),
                "cat": "tf",
                "ph": "X",
                "ts": round(float(row.start_ns) / 1000, 3),
                "dur": round(float(duration) / 1000, 3),
                "pid": pid,
                "tid": line_tids[key],
                "args": {"node": str(row.node or ""), "op": str(row.op or ""), "address": address},
            }
        )

    untimed = 0
    stream_tids: dict[tuple[int, str], int] = {}
    for event in log_events:
        if event.time is None:
            untimed += 1
            continue
        pid = event.pid if event.pid is not None else CAPTURE_PID
        if event.pid is not None:
            name_process(pid, labels.get(pid, f"pid {pid}"))
        stream = (pid, event.stream)
        if stream not in stream_tids:
            stream_tids[stream] = 1 + len(stream_tids)
            name_thread(pid, stream_tids[stream], f"log {event.stream}")
        events.append(
            {
                "name": f"{event.kind}: {event.text[:80]}",
                "cat": f"log,{event.kind}",
                "ph": "i",
                "s": "t",
                "ts": _us(event.time),
                "pid": pid,
                "tid": stream_tids[stream],
                "args": {"line": event.text, "line_no": event.line_no, "stream": event.stream},
            }
        )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "dump": str(dump.path),
            "host": dump.host,
            "log_events_without_timestamp": untimed,
            "tf_events_without_time": dropped_tf,
        },
    }
