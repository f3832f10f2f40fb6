"""A short trace from the profiler service every tf.distribute.Server exposes.

TensorFlow is imported only in a child process (`python -m collectors.tf_profiler`) that
the capture bounds in time: against a frozen server the client would retry for a minute.
The server itself writes the XSpace under the log directory we name (ours, in the dump).
The child converts it to a flat event table so the analyzer never needs TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from collectors.layout import FailureKind
from collectors.tools import run_bounded

# A live server answers within the trace plus this much.
TRACE_TIMEOUT_SLACK = 12.0
# The child imports TensorFlow first: ~4 s on an idle host, measured past 13 s on a
# loaded one (the incident's host often is). That time is not the server's to answer in.
IMPORT_ALLOWANCE = 45.0
IMPORTED_MARKER = "imported"  # a file the child writes once TensorFlow is imported
CONNECT_TIMEOUT = 2.0
NO_EVENTS = "No trace event was collected"


def longest(duration_ms: int) -> float:
    """The longest a trace can take: the client's import, then the server's answer."""
    return CONNECT_TIMEOUT + IMPORT_ALLOWANCE + duration_ms / 1000 + TRACE_TIMEOUT_SLACK + 5


def probe(address: str, timeout: float = CONNECT_TIMEOUT) -> str:
    """'' if a TCP connect succeeds, else why not (refused, timed out...)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return ""
    except (OSError, ValueError) as exc:
        return f"cannot connect to {address}: {exc}"


@dataclass(frozen=True)
class TraceResult:
    ok: bool
    reason: str = ""
    kind: FailureKind = FailureKind.NONE  # NO_ANSWER: the server was asked and did not answer


def run_trace(address: str, out_dir: Path, duration_ms: int) -> TraceResult:
    """Trace in a bounded child process."""
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "collectors.tf_profiler", address, str(out_dir), str(duration_ms)]
    marker = out_dir / IMPORTED_MARKER
    answer_within = duration_ms / 1000 + TRACE_TIMEOUT_SLACK
    asked: list[float] = []  # monotonic time the child was seen to have imported TF

    def server_deadline() -> float | None:
        if not asked and marker.exists():
            asked.append(time.monotonic())
        return asked[0] + answer_within if asked else None

    run = run_bounded(argv, IMPORT_ALLOWANCE + answer_within, server_deadline)
    (out_dir / "trace.log").write_bytes(run.stdout + run.stderr)
    marker.unlink(missing_ok=True)
    if run.interrupted:
        return TraceResult(False, "interrupted (Ctrl-C)", FailureKind.INTERRUPTED)
    if run.timed_out:
        if not asked:
            return TraceResult(
                False,
                f"the trace client could not import TensorFlow within {run.seconds:.0f}s "
                f"(this host is overloaded); {address} was not asked",
                FailureKind.CLIENT,
            )
        return TraceResult(
            False,
            f"the profiler service at {address} did not answer within "
            f"{time.monotonic() - asked[0]:.0f}s (a stopped or overloaded server does not "
            "answer)",
            FailureKind.NO_ANSWER,
        )
    if run.returncode != 0:
        text = run.stderr.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip()]
        detail = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        # Our child failing before it asked (no TensorFlow, a broken install) says nothing
        # about the server.
        kind = FailureKind.NO_ANSWER if asked else FailureKind.CLIENT
        return TraceResult(False, f"trace of {address} failed: {detail[:300]}", kind)
    return TraceResult(True)


def xspace_events(xspace: Any) -> list[dict[str, Any]]:
    events = []
    for plane in xspace.planes:
        metadata = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = metadata.get(event.metadata_id, "")
                node, _, op = name.partition(":")
                events.append(
                    {
                        "plane": plane.name,
                        "line": line.name,
                        "name": name,
                        "node": node if op else "",
                        "op": op,
                        "start_ns": line.timestamp_ns + event.offset_ps // 1000,
                        "duration_ns": event.duration_ps // 1000,
                    }
                )
    return events


def _main(argv: list[str]) -> int:
    address, out_dir, duration_ms = argv[0], Path(argv[1]), int(argv[2])
    import tensorflow as tf  # lazily, in this child only
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    (out_dir / IMPORTED_MARKER).write_text("")  # from here on, the server's time counts

    logdir = out_dir / "logdir"
    started = time.time()
    try:
        tf.profiler.experimental.client.trace(
            f"grpc://{address}", str(logdir), duration_ms, num_tracing_attempts=1
        )
    except Exception as exc:  # the client raises bare RuntimeErrors / TF errors
        if NO_EVENTS in str(exc):
            # The server answered but ran nothing while we traced: idle is evidence too.
            _write_events(out_dir, address, started, duration_ms, [], idle=True)
            shutil.rmtree(logdir, ignore_errors=True)
            return 0
        raise
    planes = sorted(logdir.glob("plugins/profile/*/*.xplane.pb"))
    if not planes:
        print(f"no xplane.pb written under {logdir}", file=sys.stderr)
        return 3
    xspace = xplane_pb2.XSpace()
    xspace.ParseFromString(planes[-1].read_bytes())
    events = xspace_events(xspace)
    planes[-1].replace(out_dir / "xplane.pb")
    shutil.rmtree(logdir, ignore_errors=True)
    _write_events(out_dir, address, started, duration_ms, events, idle=not events)
    return 0


def _write_events(
    out_dir: Path,
    address: str,
    started: float,
    duration_ms: int,
    events: list[dict[str, Any]],
    idle: bool,
) -> None:
    (out_dir / "events.json").write_text(
        json.dumps(
            {
                "address": address,
                "traced_at": started,
                "duration_ms": duration_ms,
                "answered": True,
                "idle": idle,
                "events": events,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
