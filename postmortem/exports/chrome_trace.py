"""TF profiler events, log events and capture rounds -> Chrome / Perfetto trace JSON.

The Trace Event Format: `traceEvents` of complete (`X`, with `dur`), instant (`i`) and
metadata (`M`) events; `ts` and `dur` in microseconds. Each TF server is drawn as the
process that listens on its address when the dump holds it.
"""

from __future__ import annotations

import json
from typing import Any

from postmortem.model import Incident
from postmortem.render import Drawing, RenderOptions

CAPTURE_PID = 0  # the capture's own rounds
SYNTHETIC_PID_BASE = 10_000_000  # TF servers whose process the dump does not hold


def _us(seconds: float) -> float:
    return round(seconds * 1e6, 3)


class _Trace:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._threads: set[tuple[int, int]] = set()
        self._processes: set[int] = set()

    def name_process(self, pid: int, name: str) -> None:
        if pid not in self._processes:
            self._processes.add(pid)
            self.events.append(
                {
                    "name": "process_name",
                    "ph": "M",
                    "ts": 0,
                    "pid": pid,
                    "tid": 0,
                    "args": {"name": name},
                }
            )

    def name_thread(self, pid: int, tid: int, name: str) -> None:
        if (pid, tid) not in self._threads:
            self._threads.add((pid, tid))
            self.events.append(
                {
                    "name": "thread_name",
                    "ph": "M",
                    "ts": 0,
                    "pid": pid,
                    "tid": tid,
                    "args": {"name": name},
                }
            )


def trace_document(incident: Incident) -> dict[str, Any]:
    trace = _Trace()
    events = trace.events
    labels = incident.process_labels()
    timeline = incident.timeline
    trace.name_process(CAPTURE_PID, "postmortem capture")
    trace.name_thread(CAPTURE_PID, 0, "rounds")
    for r in timeline.rounds:
        events.append(
            {
                "name": f"round {r.index}",
                "cat": "capture",
                "ph": "X",
                "ts": _us(r.started_at),
                "dur": _us(r.ended_at - r.started_at),
                "pid": CAPTURE_PID,
                "tid": 0,
                "args": {},
            }
        )

    server_pids: dict[str, int] = {}
    line_tids: dict[tuple[str, str, str], int] = {}
    for e in timeline.tf_events:
        if e.address not in server_pids:
            server_pids[e.address] = e.pid or SYNTHETIC_PID_BASE + len(server_pids)
            trace.name_process(server_pids[e.address], e.track)
        pid = server_pids[e.address]
        key = (e.address, e.plane, e.line)
        if key not in line_tids:
            line_tids[key] = 1000 + len(line_tids)
            trace.name_thread(pid, line_tids[key], f"{e.plane} / {e.line}")
        events.append(
            {
                "name": e.name,
                "cat": f"tf,{e.kind.value}",
                "ph": "X",
                "ts": _us(e.start),
                "dur": _us(e.duration_s),
                "pid": pid,
                "tid": line_tids[key],
                "args": {"node": e.node, "op": e.op, "address": e.address},
            }
        )

    stream_tids: dict[tuple[int, str], int] = {}
    for event in timeline.log_events:
        if event.time is None:
            continue
        pid = event.pid if event.pid is not None else CAPTURE_PID
        if event.pid is not None:
            trace.name_process(pid, labels.get(pid, f"pid {pid}"))
        stream = (pid, event.stream)
        if stream not in stream_tids:
            stream_tids[stream] = 1 + len(stream_tids)
            trace.name_thread(pid, stream_tids[stream], f"log {event.stream}")
        events.append(
            {
                "name": f"{event.kind.value}: {event.text[:80]}",
                "cat": f"log,{event.kind.value}",
                "ph": "i",
                "s": "t",
                "ts": _us(event.time),
                "pid": pid,
                "tid": stream_tids[stream],
                "args": {"line": event.text, "line_no": event.line_no, "stream": event.stream},
            }
        )
    for series in timeline.steps:
        pid = series.pid if series.pid is not None else CAPTURE_PID
        if series.pid is not None:
            trace.name_process(pid, labels.get(pid, f"pid {pid}"))
        for point in series.points:
            if point.time is not None:
                events.append(
                    {
                        "name": "step",
                        "cat": "log,step",
                        "ph": "C",
                        "ts": _us(point.time),
                        "pid": pid,
                        "tid": 0,
                        "args": {"step": point.step},
                    }
                )
    return {
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": {
            "dump": incident.dump.path,
            "host": incident.dump.host,
            "log_events_without_timestamp": timeline.untimed_log_events,
            "tf_events_without_time": timeline.tf_events_without_time,
            "step_lines_as_counters": timeline.step_lines_omitted,
        },
    }


def draw(incident: Incident, options: RenderOptions) -> str:
    return json.dumps(trace_document(incident), separators=(",", ":")) + "\n"


CHROME_TRACE = Drawing(
    "chrome-trace",
    ".trace.json",
    "TF profiler and log events (ui.perfetto.dev, chrome://tracing)",
    draw,
)
