"""Stacks -> Brendan Gregg's folded format: `frame;frame;frame count` per line.

Root first: process, thread, then the frames from outermost to innermost; the count is
how many rounds saw exactly that stack. flamegraph.pl, inferno and speedscope read it.
"""

from __future__ import annotations

from collections import Counter

from postmortem.exports import samples_for
from postmortem.model import Incident, StackSample
from postmortem.render import Drawing, RenderOptions

# ';' separates frames and the last space the count: neither may appear inside a frame.
UNSAFE = str.maketrans({";": ":", "\r": ":", "\n": ":", "\t": ":"})


def folded_name(text: str) -> str:
    return text.translate(UNSAFE)


def folded_lines(samples: list[StackSample], labels: dict[int, str]) -> list[str]:
    counts: Counter[str] = Counter()
    for s in samples:
        parts = [labels.get(s.pid, f"pid {s.pid}"), f"{s.thread_name or '?'} (tid {s.tid})"]
        parts += [f.label for f in s.stack.root_first()]
        counts[";".join(folded_name(p) for p in parts)] += 1
    return [f"{stack} {count}" for stack, count in sorted(counts.items())]


def draw(incident: Incident, options: RenderOptions) -> str:
    lines = folded_lines(samples_for(incident, options.stacks), incident.process_labels())
    return "\n".join(lines) + ("\n" if lines else "")


FOLDED = Drawing(
    "folded",
    ".folded",
    "flame-graph input (flamegraph.pl, inferno)",
    draw,
)
