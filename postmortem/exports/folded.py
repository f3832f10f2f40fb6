"""Stacks -> Brendan Gregg's folded format: `frame;frame;frame count` per line.

Root first: process, thread, then the frames from outermost to innermost; the count is
how many rounds saw exactly that stack. flamegraph.pl, inferno and speedscope read it.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping

from postmortem.exports.common import StackSample

# ';' separates frames and the last space the count: neither may appear inside a frame.
UNSAFE = re.compile(r"[;\r\n\t]")


def folded_name(text: str) -> str:
    return UNSAFE.sub(":", text)


def folded_lines(samples: list[StackSample], labels: Mapping[int, str]) -> list[str]:
    counts: Counter[str] = Counter()
    for s in samples:
        parts = [labels.get(s.pid, f"pid {s.pid}"), f"{s.thread_name or '?'} (tid {s.tid})"]
        parts += [f.label for f in s.frames]
        counts[";".join(folded_name(p) for p in parts)] += 1
    return [f"{stack} {count}" for stack, count in sorted(counts.items())]


def folded_text(samples: list[StackSample], labels: Mapping[int, str]) -> str:
    lines = folded_lines(samples, labels)
    return "\n".join(lines) + ("\n" if lines else "")
