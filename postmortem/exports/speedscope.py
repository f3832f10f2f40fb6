"""Stacks -> speedscope JSON (https://www.speedscope.app/file-format-schema.json).

One `sampled` profile per process; each sample is one thread's stack in one round, with
a leading frame naming the thread so threads stay apart in the flame views.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postmortem import __version__
from postmortem.exports.common import FrameRef, StackSample

SCHEMA_URL = "https://www.speedscope.app/file-format-schema.json"


def speedscope_document(
    samples: list[StackSample], labels: Mapping[int, str], name: str
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

    def ref_id(ref: FrameRef) -> int:
        return frame_id(ref.function or "?", ref.filename, ref.line)

    profiles = []
    for pid in sorted({s.pid for s in samples}):
        mine = [s for s in samples if s.pid == pid]
        stacks = [
            [frame_id(f"thread {s.thread_name or '?'} (tid {s.tid})")]
            + [ref_id(f) for f in s.frames]
            for s in mine
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
