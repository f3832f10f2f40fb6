"""Not a hang: training advances and nothing waits on a member that cannot answer.

Positive evidence only: step counters that moved during the capture (the logs), or
training threads that keep waking and returning from session.run (the watch between
rounds). A job that is merely slow to step is not called stuck when either shows.
"""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.progress import overdue
from postmortem.analysis.rules.common import Case, thread_evidence
from postmortem.model import Evidence, Finding, HangClass, LogProgress, Status, Thread, WaitKind

HANG_CLASS = HangClass.HEALTHY

FIX = (
    "Nothing to fix: the job trains and saves. If it looked stuck, check what made it look "
    "so (a dashboard that stopped refreshing, a stale log file); capture again when it "
    "misbehaves."
)
STALL_WAITS = (
    WaitKind.SESSION_RUN,
    WaitKind.SESSION_CREATE,
    WaitKind.LOCK,
    WaitKind.COLLECTIVE,
    WaitKind.TF_OP,
)
STEP_WAITS = (WaitKind.SESSION_RUN, WaitKind.TF_OP)  # a v1 session.run, a TF2 step


def evaluate(facts: Facts) -> list[Finding]:
    if any(h.unresponsive for h in facts.health.values()):
        return []  # a member that cannot answer: degraded or a hang, not healthy
    if any(t.status is Status.STUCK and t.waits_on is WaitKind.COLLECTIVE for t in facts.threads):
        return []  # a collective that never completes: synchronous training cannot go on
    moved = [p for p in facts.progress if p.moved and p.pid is not None]
    active = [
        t
        for t in facts.threads
        if t.waits_on in STEP_WAITS and t.status is Status.ACTIVE and not t.in_save
    ]
    if not moved and not active:
        return []
    case = Case(HANG_CLASS, 0.5)
    stepping = sorted({p.role for p in moved})
    if moved:
        case.add(0.3, *(_progress_evidence(p) for p in moved[:4]))
    silent = [p for p in facts.progress if p.pid is not None and not p.moved]
    late = [p for p in silent if overdue(p)]
    if moved and not late:
        case.add(0.05)
    for p in late:
        case.add(
            -0.3,
            Evidence(
                f"but {p.role} {'recorded' if p.recorded else 'logged'} no step for "
                f"{p.last_step_age_s:.0f}s, far longer than its usual {p.interval_s:.1f}s "
                "between steps",
                p.source,
                p.role,
            ),
        )
    if active:
        case.add(
            0.1 if moved else 0.25,
            *(thread_evidence(facts, t, f"keeps returning from {_call(t)}") for t in active[:3]),
        )
    stuck = [
        t
        for t in facts.threads
        if t.status is Status.STUCK and t.waits_on in STALL_WAITS and not t.in_save
    ]
    if stuck:
        case.add(-0.15, *(thread_evidence(facts, t, "but this one never woke") for t in stuck[:2]))
    saves = facts.saves
    cadence = ""
    for save in saves[:1]:
        if save.last_save_age_s is not None:
            cadence = f"; the last checkpoint was saved {save.last_save_age_s:.0f}s ago"
            if save.interval_s is not None:
                cadence += f", every {save.interval_s:.0f}s"
            case.add(
                0.05,
                Evidence(
                    f"{save.saves} checkpoint(s) kept in {save.dir}, the newest "
                    f"{save.last_save_age_s:.0f}s old"
                    + (f", one every {save.interval_s:.0f}s" if save.interval_s else ""),
                    facts.checkpoint_source(save.dir),
                ),
            )
    rates = [p.rate for p in moved if p.rate]
    if moved:
        how = (
            f"the global step advances {max(rates):.1f}/s" if rates else "steps advance"
        ) + f", seen on {len(stepping)} process(es) ({', '.join(stepping)})"
    else:
        roles = sorted({t.role for t in active})
        calls = " and ".join(sorted({_call(t) for t in active}))
        how = f"the training threads of {', '.join(roles)} keep returning from {calls}"
    summary = f"Healthy: {how}{cadence}. Nothing is stuck."
    op = "none: training advances"
    return [case.finding(summary, FIX, None, op, cap=0.9)]


def _progress_evidence(p: LogProgress) -> Evidence:
    rate = f" ({p.rate:.1f} steps/s)" if p.rate else ""
    if not p.last_step_age_s or (p.recorded and p.last_step_age_s < 1.0):
        age = ""  # a step that ended within a second of the recorder's last write: current
    elif p.recorded:
        age = (f"; its last recorded step ended {p.last_step_age_s:.1f}s before the "
               "recorder last wrote its file")
    else:
        age = f"; its last step line is {p.last_step_age_s:.1f}s old"
    how = " (its flight recorder)" if p.recorded else ""
    return Evidence(
        f"{p.role} advanced {p.steps_in_window} step(s) during the capture{how}{rate}, to step "
        f"{p.last_step}{age}",
        p.source,
        p.role,
    )


def _call(thread: Thread) -> str:
    return "a TF op" if thread.waits_on is WaitKind.TF_OP else "session.run"
