"""Dump -> verdict. Rules read the building blocks in `facts`; nothing here renders."""

from __future__ import annotations

from typing import Any

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Culprit, Evidence, Finding, HangClass, Verdict
from postmortem.analysis.rules import RULES
from postmortem.loading import Dump

__all__ = ["Culprit", "Evidence", "Finding", "HangClass", "Verdict", "analyze", "facts_summary"]

NO_HANG_FIX = (
    "No hang signature was found. Capture again while the job is stuck, with more "
    "rounds (--samples 5 --interval 2), --all-threads for native stacks, the ps and "
    "worker pids together, and --tf-server for each task."
)


def analyze(dump: Dump) -> Verdict:
    facts = Facts(dump)
    findings: list[Finding] = []
    for rule in RULES:
        findings.extend(rule(facts))
    findings.sort(key=lambda f: f.confidence, reverse=True)
    if not findings or findings[0].confidence < 0.3:
        stuck = [t for t in facts.threads if t.status == "stuck"]
        summary = "No known hang pattern matched."
        if stuck:
            summary += f" {len(stuck)} thread(s) look stuck; see the evidence."
        findings.append(
            Finding(
                HangClass.NO_HANG_FOUND,
                0.3,
                summary,
                NO_HANG_FIX,
                None,
                "",
                tuple(
                    Evidence(
                        f"{t.label} of {facts.role(t.pid)} stuck in {t.frames_text(4)}", "stacks"
                    )
                    for t in stuck[:5]
                ),
            )
        )
        findings.sort(key=lambda f: f.confidence, reverse=True)
    return Verdict(findings[0], tuple(findings), facts_summary(facts))


def facts_summary(facts: Facts) -> dict[str, Any]:
    """The building blocks in plain data, for renderers (they never recompute)."""
    return {
        "host": facts.host,
        "rounds": facts.rounds,
        "members": [
            {
                "role": m.role,
                "job": m.job,
                "task": m.task,
                "address": m.address,
                "pid": m.pid,
                "captured": m.captured,
                "problems": facts.health[m.role].problems if m.role in facts.health else [],
            }
            for m in facts.members
        ],
        "wait_for": [{"from": a, "to": b, "why": why} for a, b, why in facts.wait_for],
        "wait_for_sinks": facts.wait_for_sinks,
        "stack_classes": [
            {
                "stack": list(c.signature[-8:]),
                "threads": len(c.threads),
                "processes": [facts.role(pid) for pid in c.processes],
            }
            for c in facts.stack_classes[:30]
        ],
        "outliers": [{"role": role, "why": why} for role, why in facts.outliers],
        "threads": [
            {
                "pid": t.pid,
                "role": facts.role(t.pid),
                "tid": t.tid,
                "name": t.name,
                "status": t.status,
                "waits_on": t.waits_on,
                "states": t.states,
                "cpu_seconds": round(t.cpu_seconds, 3),
                "in_save": t.in_save,
                "stack": t.frames_text(8),
                "wchan": t.wchan,
            }
            for t in facts.threads
        ],
        "checkpoint": facts.checkpoint_progress,
        "logs": {
            role: {
                "last_step": f.last_step,
                "save_lines": len(f.save_lines),
                "saves_after_last_step": f.saves_after_last_step,
                "errors": (f.oversized + f.grpc_errors)[:5],
                "create_session_waits": f.create_session_waits[:3],
            }
            for role, f in facts.logs.items()
        },
    }
