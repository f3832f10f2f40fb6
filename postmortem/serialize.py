"""The incident model as JSON: `postmortem analyze --json`, and nothing else.

One generic walk over the model's dataclasses: enums become their values, tuples lists,
and every `Stack` an index into the document's `stacks` table (a thread's stack and the
samples that share it are written once). docs/incident-json.md describes the document.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import operator
from typing import Any

from postmortem import __version__
from postmortem.model import Finding, Incident, Stack

FORMAT = "postmortem-incident"
SCHEMA_VERSION = 3  # 2: wait_for one object per edge; 1: postmortem 0.1's verdict document
PLAIN = (str, int, bool)  # exact types written as they are (not their subclasses: enums)


class _Writer:
    def __init__(self) -> None:
        self.stacks: list[Any] = []
        self.index: dict[Stack, int] = {}
        self.by_id: dict[int, int] = {}  # id(stack) -> index: equal stacks hash slowly
        self.kinds: dict[type, str] = {}
        self.fields: dict[type, tuple[str, ...]] = {}
        self.getters: dict[type, Any] = {}

    def _kind(self, kind: type) -> str:
        """How values of a type are written, decided once per type (the checks in order)."""
        if kind is type(None) or issubclass(kind, (str, int, bool)) and not issubclass(
            kind, enum.Enum
        ):
            return "plain"
        if issubclass(kind, Stack):
            return "stack"
        if issubclass(kind, enum.Enum):
            return "enum"
        if dataclasses.is_dataclass(kind):
            names = self.fields[kind] = tuple(f.name for f in dataclasses.fields(kind))
            self.getters[kind] = operator.attrgetter(*names)
            return "dataclass"
        if issubclass(kind, (list, tuple)):
            return "sequence"
        if issubclass(kind, dict):
            return "mapping"
        if issubclass(kind, float):
            return "float"
        return "other"

    def value(self, obj: Any) -> Any:
        kind = self.kinds.get(type(obj))
        if kind is None:
            kind = self.kinds[type(obj)] = self._kind(type(obj))
        if kind == "plain":
            return obj
        if kind == "dataclass":
            names = self.fields[type(obj)]
            values = self.getters[type(obj)](obj)
            if len(names) == 1:
                values = (values,)
            # A 1,000-process incident has ~150,000 of them: plain values copied as they are.
            return {
                name: v if v is None or type(v) in PLAIN else self.value(v)
                for name, v in zip(names, values, strict=True)
            }
        if kind == "sequence":
            return [self.value(v) for v in obj]
        if kind == "stack":
            found = self.by_id.get(id(obj))
            if found is None:
                found = self.index.get(obj)
                if found is None:
                    found = self.index[obj] = len(self.stacks)
                    self.stacks.append([self.value(f) for f in obj.frames])
                self.by_id[id(obj)] = found
            return found
        if kind == "enum":
            return obj.value
        if kind == "mapping":
            return {str(k): self.value(v) for k, v in obj.items()}
        if kind == "float" and not math.isfinite(obj):
            return None
        return obj


def verdict_summary(finding: Finding) -> dict[str, Any]:
    """The top finding in the shape of schema 1's `verdict`, for scripts that read it."""
    culprit = finding.culprit
    return {
        "hang_class": finding.hang_class.value,
        "culprit": dataclasses.asdict(culprit) if culprit else None,
        "blocking_op": finding.blocking_op,
        "summary": finding.summary,
        "fix": finding.fix,
        "confidence": finding.confidence,
    }


def incident_document(incident: Incident) -> dict[str, Any]:
    writer = _Writer()
    body = writer.value(incident)
    body.pop("verdict")
    return {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "postmortem": __version__,
        "verdict": verdict_summary(incident.verdict.finding),
        "findings": writer.value(incident.verdict.findings),
        **body,
        "stacks": writer.stacks,
    }
