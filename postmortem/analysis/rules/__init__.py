"""One module per hang class. Each declares `HANG_CLASS` and `evaluate(facts)`, which
returns the findings it sees (usually none or one).

A rule reads only `Facts`, never a sample's name or path, and never another rule: which
finding explains which is decided in one place, `postmortem.analysis.rank`. Adding a hang
class is one module here and one `HangClass` value; this package finds the module.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from postmortem.analysis.facts import Facts
from postmortem.model import Finding, HangClass


@dataclass(frozen=True)
class Rule:
    hang_class: HangClass
    evaluate: Callable[[Facts], list[Finding]]
    name: str


NOT_RULES = ("common",)


def discover() -> tuple[Rule, ...]:
    rules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name in NOT_RULES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        rules.append(Rule(module.HANG_CLASS, module.evaluate, info.name))
    order = list(HangClass)
    return tuple(sorted(rules, key=lambda r: (order.index(r.hang_class), r.name)))


RULES: tuple[Rule, ...] = discover()
