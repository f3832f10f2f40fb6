"""TF profiler events, flight-recorder step_stats, log events and capture rounds -> Chrome
/ Perfetto trace JSON.

The Trace Event Format: `traceEvents` of complete (`X`, with `dur`), instant (`i`) and
metadata (`M`) events; `ts` and `dur` in microseconds. Each TF server is drawn as the
process that listens on its address when the dump holds it. A recorded step's ops go to
the process that recorded it, one thread per device, as TF's own Timeline drew them; its
steps and saves to a "flight recorder" thread.
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

    _flight_events(trace, incident, labels)

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


FLIGHT_TID = 500  # a recording process's steps and saves
DEVICE_TID_BASE = 600  # one thread per device of its traced steps


def _flight_events(trace: _Trace, incident: Incident, labels: dict[int, str]) -> None:
    events = trace.events
    for record in incident.flights:
        pid = record.pid
        trace.name_process(pid, labels.get(pid, f"pid {pid}"))
        trace.name_thread(pid, FLIGHT_TID, "flight recorder: steps and saves")
        for step in record.steps:
            if step.seconds is None:
                continue
            events.append(
                {
                    "name": f"step {step.global_step if step.global_step is not None else '?'}",
                    "cat": "flight,step",
                    "ph": "X",
                    "ts": _us(step.started),
                    "dur": _us(step.seconds),
                    "pid": pid,
                    "tid": FLIGHT_TID,
                    "args": {"global_step": step.global_step, "traced": step.traced},
                }
            )
        for save in record.saves:
            events.append(
                {
                    "name": "save" + (" (never ended)" if save.ended is None else ""),
                    "cat": "flight,save",
                    "ph": "X",
                    "ts": _us(save.began),
                    "dur": _us(save.seconds or 0.0),
                    "pid": pid,
                    "tid": FLIGHT_TID,
                    "args": {"global_step": save.global_step, "path": save.path},
                }
            )
        devices: dict[str, int] = {}
        for step_index, traced in enumerate(record.traces):
            for op in traced.ops:
                if op.device not in devices:
                    devices[op.device] = DEVICE_TID_BASE + len(devices)
                    trace.name_thread(pid, devices[op.device], f"step_stats {op.device}")
                args: dict[str, Any] = {
                    "op": op.op,
                    "device": op.device,
                    "label": op.label,
                    "global_step": traced.global_step,
                    "trace": step_index,
                }
                if op.bytes is not None:
                    args.update(bytes=op.bytes, source_device=op.source_device)
                events.append(
                    {
                        "name": op.node,
                        "cat": "flight,step_stats",
                        "ph": "X",
                        "ts": _us(op.start),
                        "dur": _us(op.duration_s),
                        "pid": pid,
                        "tid": devices[op.device],
                        "args": args,
                    }
                )


def draw(incident: Incident, options: RenderOptions) -> str:
    return json.dumps(trace_document(incident), separators=(",", ":")) + "\n"


CHROME_TRACE = Drawing(
    "chrome-trace",
    ".trace.json",
    "TF profiler, flight recorder step_stats and log events (ui.perfetto.dev, "
    "chrome://tracing)",
    draw,
)
