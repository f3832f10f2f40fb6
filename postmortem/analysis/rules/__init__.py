"""One module per hang class; each `evaluate(facts)` returns findings (possibly none).

A rule reads only `Facts` (the building blocks) and never a sample's name or path.
"""

from __future__ import annotations

from collections.abc import Callable

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Finding
from postmortem.analysis.rules import (
    lock_deadlock,
    oversized_tensor,
    peer_unreachable,
    peer_unresponsive,
    save_progressing,
    storage_stall,
    training_stalled,
)

Rule = Callable[[Facts], list[Finding]]

RULES: tuple[Rule, ...] = (
    oversized_tensor.evaluate,
    peer_unresponsive.evaluate,
    storage_stall.evaluate,
    training_stalled.evaluate,
    lock_deadlock.evaluate,
    peer_unreachable.evaluate,
    save_progressing.evaluate,
)
