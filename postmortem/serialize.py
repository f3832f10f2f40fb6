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
SCHEMA_VERSION = 2  # 1: the verdict document of postmortem 0.1 (verdict, findings, cluster...)
PLAIN = (str, int, bool)  # exact types written as they are (not their subclasses: enums)


class _Writer:
    def __init__(self) -> None:
        self.stacks: list[Any] = []
        self.index: dict[Stack, int] = {}
        self.fields: dict[type, tuple[str, ...]] = {}
        self.getters: dict[type, Any] = {}

    def value(self, obj: Any) -> Any:
        if obj is None or isinstance(obj, (str, int, bool)):
            return obj
        if isinstance(obj, Stack):
            found = self.index.get(obj)
            if found is None:
                found = self.index[obj] = len(self.stacks)
                self.stacks.append([self.value(f) for f in obj.frames])
            return found
        if isinstance(obj, enum.Enum):
            return obj.value
        names = self.fields.get(type(obj))
        if names is None and dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            names = self.fields[type(obj)] = tuple(f.name for f in dataclasses.fields(obj))
            self.getters[type(obj)] = operator.attrgetter(*names)
        if names is not None:
            values = self.getters[type(obj)](obj)
            if len(names) == 1:
                values = (values,)
            # A 1,000-process incident has ~150,000 of them: plain values copied as they are.
            return {
                name: v if v is None or type(v) in PLAIN else self.value(v)
                for name, v in zip(names, values, strict=True)
            }
        if isinstance(obj, (list, tuple)):
            return [self.value(v) for v in obj]
        if isinstance(obj, dict):
            return {str(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, float) and not math.isfinite(obj):
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
