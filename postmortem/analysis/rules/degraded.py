"""Not a hang, not healthy: a member is stopped or dead, and training goes on without it.

Asynchronous training (and synchronous training with backup replicas) keeps stepping when
a worker freezes or dies; nothing hangs, but the job is not what it should be. Name the
member, say how fast training still goes, and what is at risk.
"""

from __future__ import annotations

from postmortem.analysis.cluster import Health
from postmortem.analysis.facts import Facts
from postmortem.analysis.rules.common import Case, culprit, member_evidence, thread_evidence
from postmortem.analysis.rules.healthy import _progress_evidence
from postmortem.model import Finding, HangClass, Status, WaitKind

HANG_CLASS = HangClass.DEGRADED


def _rank(health: Health) -> tuple[int, int]:
    return (health.member.job in ("worker", "chief"), len(health.problems))


def evaluate(facts: Facts) -> list[Finding]:
    bad = [h for h in facts.health.values() if h.unresponsive]
    if not bad or any(h.member.job == "ps" for h in bad):
        # Every step reads and updates the ps's variables: with a ps out, nothing trains,
        # whatever a stray log line says. That is a hang, not a degraded job.
        return []
    down = {h.member.role for h in bad}
    moved = [p for p in facts.progress if p.moved and p.pid is not None and p.role not in down]
    active = [
        t
        for t in facts.threads
        if t.waits_on in (WaitKind.SESSION_RUN, WaitKind.TF_OP)
        and t.status is Status.ACTIVE
        and not t.in_save
        and t.role not in down
    ]
    if not moved and not active:
        return []
    suspect = max(bad, key=_rank)
    role, job = suspect.member.role, suspect.member.job
    case = Case(HANG_CLASS, 0.55)
    case.add(0, *member_evidence(facts, role))
    if moved:
        case.add(0.25, *(_progress_evidence(p) for p in moved[:3]))
    if active:
        case.add(
            0.1 if moved else 0.2,
            *(thread_evidence(facts, t, "keeps returning from session.run") for t in active[:2]),
        )
    rates = [p.rate for p in moved if p.rate]
    others = sorted({p.role for p in moved} | {t.role for t in active})
    pace = f" at {max(rates):.1f} global steps/s" if rates else ""
    state = suspect.problems[0]
    summary = (
        f"Degraded: {role} is {state}, but training goes on without it{pace} "
        f"({', '.join(others)} still step). {_at_risk(role, job)}"
    )
    fix = (
        f"Bring {role} back (`kill -CONT` a stopped process; restart a dead one and look in "
        "its log and the host's dmesg for why it died). Until then the job trains without "
        "it; run tasks under a supervisor that restarts them."
    )
    return [
        case.finding(
            summary, fix, culprit(facts, role, state), f"none blocked: {role} is out", cap=0.9
        )
    ]


def _at_risk(role: str, job: str) -> str:
    if job == "chief" or role == "worker:0":
        return (
            "At risk: it is the chief, which saves checkpoints and writes summaries: nothing "
            "is saved while it is down, and a crash now loses everything since the last save."
        )
    return (
        "At risk: its share of the input is not trained on, and synchronous steps (if any) "
        "wait for backup replicas; the job runs slower than planned."
    )
