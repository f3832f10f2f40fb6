"""Stacks -> speedscope JSON (https://www.speedscope.app/file-format-schema.json).

One `sampled` profile per process; each sample is one thread's stack in one round, with
a leading frame naming the thread so threads stay apart in the flame views.
"""

from __future__ import annotations

import json
from typing import Any

from postmortem import __version__
from postmortem.exports import samples_for
from postmortem.model import Frame, Incident, StackSample
from postmortem.render import Drawing, RenderOptions

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(
    samples: list[StackSample], labels: dict[int, str], name: str
) -> dict[str, Any]:
    frames: list[dict[str, Any]] = []
    index: dict[tuple[str, str, int], int] = {}

    def frame_id(name: str, file: str = "", line: int = 0) -> int:
        key = (name, file, line)
        if key not in index:
            index[key] = len(frames)
            entry: dict[str, Any] = {"name": name}
            if file:
                entry["file"] = file
            if line:
                entry["line"] = line
            frames.append(entry)
        return index[key]

    def ref_id(frame: Frame) -> int:
        return frame_id(frame.function or "?", frame.filename, frame.line)

    by_pid: dict[int, list[StackSample]] = {}
    for s in samples:
        by_pid.setdefault(s.pid, []).append(s)
    profiles = []
    for pid in sorted(by_pid):
        stacks = [
            [frame_id(f"thread {s.thread_name or '?'} (tid {s.tid})")]
            + [ref_id(f) for f in s.stack.root_first()]
            for s in by_pid[pid]
        ]
        profiles.append(
            {
                "type": "sampled",
                "name": labels.get(pid, f"pid {pid}"),
                "unit": "none",
                "startValue": 0,
                "endValue": len(stacks),
                "samples": stacks,
                "weights": [1] * len(stacks),
            }
        )
    return {
        "$schema": SCHEMA_URL,
        "shared": {"frames": frames},
        "profiles": profiles,
        "name": name,
        "activeProfileIndex": 0,
        "exporter": f"postmortem {__version__}",
    }


def draw(incident: Incident, options: RenderOptions) -> str:
    document = speedscope_document(
        samples_for(incident, options.stacks),
        incident.process_labels(),
        f"postmortem {incident.dump.name}",
    )
    return json.dumps(document, separators=(",", ":")) + "\n"


SPEEDSCOPE = Drawing(
    "speedscope",
    ".speedscope.json",
    "stacks, one profile per process (speedscope.app)",
    draw,
)
