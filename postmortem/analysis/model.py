"""The analyzer's records: what a rule finds and the verdict built from the findings."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

Confidence = float  # 0..1


class HangClass(str, enum.Enum):
    OVERSIZED_TENSOR_TRANSFER = "oversized-tensor-transfer"
    PEER_UNRESPONSIVE = "peer-unresponsive"
    STORAGE_STALL = "storage-stall"
    TRAINING_STALLED = "training-stalled"
    LOCK_DEADLOCK = "lock-deadlock"
    PEER_UNREACHABLE = "peer-unreachable"
    SAVE_PROGRESSING = "save-progressing"
    NO_HANG_FOUND = "no-hang-found"


@dataclass(frozen=True)
class Culprit:
    role: str | None  # "ps:0", "worker:1", "chief:0", or None when no process is to blame
    pid: int | None  # None when the process is absent from the dump (dead, not captured)
    host: str | None
    state: str = ""  # what was wrong with it, in words: "stopped (SIGSTOP)", "not running"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Evidence:
    """One fact behind a finding, with where it came from so a person can check it."""

    what: str
    source: str  # e.g. "processes/123/round-001/procfs.json", "log of worker:0"
    process: str = ""  # role or pid label

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Finding:
    hang_class: HangClass
    confidence: Confidence
    summary: str
    fix: str
    culprit: Culprit | None = None
    blocking_op: str = ""
    evidence: tuple[Evidence, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "hang_class": self.hang_class.value,
            "confidence": round(self.confidence, 3),
            "summary": self.summary,
            "fix": self.fix,
            "culprit": self.culprit.to_json() if self.culprit else None,
            "blocking_op": self.blocking_op,
            "evidence": [e.to_json() for e in self.evidence],
        }


@dataclass(frozen=True)
class Verdict:
    finding: Finding
    findings: tuple[Finding, ...]
    facts: dict[str, Any] = field(default_factory=dict)  # cluster map, thread summary...

    @property
    def hang_class(self) -> HangClass:
        return self.finding.hang_class

    def to_json(self) -> dict[str, Any]:
        top = self.finding
        return {
            "hang_class": top.hang_class.value,
            "culprit": top.culprit.to_json() if top.culprit else None,
            "blocking_op": top.blocking_op,
            "summary": top.summary,
            "fix": top.fix,
            "confidence": round(top.confidence, 3),
        }
