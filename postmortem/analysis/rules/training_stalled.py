"""Training is stuck and the save is only a symptom (tensorflow#12090).

Workers wait in session.run of the train op (sync-replica token queues, gradient
accumulators), saves keep completing (the Supervisor logs "Saving checkpoint" before each
one), and one replica has stopped contributing: stopped, dead, or stuck elsewhere.
"""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.progress import overdue
from postmortem.analysis.rules.common import (
    Case,
    culprit,
    flight_evidence,
    member_evidence,
    thread_evidence,
)
from postmortem.analysis.threads import frames_text
from postmortem.model import Evidence, Finding, HangClass, Status, Thread, WaitKind

HANG_CLASS = HangClass.TRAINING_STALLED

SYNC_HINTS = (
    "sync_token_q",
    "SyncReplicas",
    "sync_replicas",
    "QueueRunner",
    "token_q",
    "ConditionalAccumulator",
    "accumulator",
)
FIX = (
    "The save is healthy; training is stuck waiting for a replica. Restart or resume the "
    "replica named as culprit. SyncReplicasOptimizer waits for replicas_to_aggregate "
    "gradients with no timeout: set replicas_to_aggregate below total_num_replicas (backup "
    "workers) so one slow or dead worker cannot stall every step, and run workers under a "
    "supervisor that restarts them."
)


def evaluate(facts: Facts) -> list[Finding]:
    stuck_train = [
        t
        for t in facts.threads
        if t.status is Status.STUCK and t.waits_on is WaitKind.SESSION_RUN and not t.in_save
    ]
    if not stuck_train:
        return []
    case = Case(HANG_CLASS, 0.35)
    sync_threads = [t for t in facts.threads if t.python and _mentions_sync(t)]
    saves_continue = [f for f in facts.logs.values() if f.saves_after_last_step >= 2]
    if sync_threads:
        case.add(
            0.2, *(thread_evidence(facts, t, "sync-replica machinery") for t in sync_threads[:2])
        )
    if saves_continue:
        f = saves_continue[0]
        case.add(
            0.2,
            Evidence(
                f"{f.role} logged {f.saves_after_last_step} 'Saving checkpoint' lines after its "
                f"last step line (step {f.last_step}): saves complete, steps do not advance",
                f.source,
                f.role,
            ),
        )
    case.add(0, *(thread_evidence(facts, t, "train op does not finish") for t in stuck_train[:3]))
    saved_after = _saves_after_steps_stopped(facts)
    if saved_after and not saves_continue:
        case.add(0.2, *saved_after)
    case.add(0, *flight_evidence(facts, {t.pid for t in stuck_train}))
    for record in facts.flights:
        if record.sync_replicas and record.replicas_to_aggregate is not None:
            case.add(
                0.05,
                Evidence(
                    f"{record.role} runs SyncReplicasOptimizer with replicas_to_aggregate="
                    f"{record.replicas_to_aggregate} (flight recorder inventory): each step "
                    "waits for that many gradients",
                    record.source,
                    record.role,
                ),
            )
            break
    # The job as a whole: step counters that stopped moving, or that still move.
    for p in facts.progress:
        if p.pid is None:
            continue
        if p.moved:
            case.add(
                -0.3,
                Evidence(
                    f"but {p.role} advanced {p.steps_in_window} step(s) during the capture",
                    p.source,
                    p.role,
                ),
            )
        elif overdue(p) and p.last_step_age_s is not None and p.interval_s is not None:
            case.add(
                0.05,
                Evidence(
                    f"{p.role} {'recorded' if p.recorded else 'logged'} no step for "
                    f"{p.last_step_age_s:.0f}s; it used to "
                    f"{'step' if p.recorded else 'log one'} every {p.interval_s:.1f}s "
                    f"(last step {p.last_step})",
                    p.source,
                    p.role,
                ),
            )

    # The culprit: a worker replica that cannot contribute.
    workers = [
        h for h in facts.health.values() if h.member.job in ("worker", "chief") and h.unresponsive
    ]
    role = None
    state = ""
    if workers:
        role, state = workers[0].member.role, workers[0].problems[0]
        case.add(0.2, *member_evidence(facts, role))
    else:
        lagging = _lagging_worker(facts)
        if lagging:
            role, state, source = lagging
            case.add(0.1, Evidence(f"{role}: {state}", source, role))
    stalled_roles = sorted({t.role for t in stuck_train})
    op = f"session.run(train_op) on {', '.join(stalled_roles)}"
    if sync_threads:
        op += " waiting for sync-replica tokens / gradients"
    summary = (
        f"Training is stalled: {', '.join(stalled_roles)} wait in session.run of the train "
        f"op"
        + (f" because {role} is {state}" if role else "")
        + ". Checkpoint saves are a symptom, not the cause."
    )
    return [case.finding(summary, FIX, culprit(facts, role, state), op, cap=0.92)]


def _saves_after_steps_stopped(facts: Facts) -> list[Evidence]:
    """The flight recorder's version of 'saves go on, steps do not' (tensorflow#12090)."""
    out = []
    for record in facts.flights:
        if record.steps_stopped is None:
            continue
        done = [s for s in record.saves if s.ended is not None and s.began > record.steps_stopped]
        if len(done) >= 2:
            out.append(
                Evidence(
                    f"flight recorder of {record.role}: {len(done)} saves completed after its "
                    "last step ended: saves complete, steps do not advance",
                    record.source,
                    record.role,
                )
            )
    return out


def _mentions_sync(thread: Thread) -> bool:
    """A sync-replica hint in the thread's name or in a function or source line of its stack."""
    stack = thread.stack
    text = "\0".join([thread.name, *(f.function for f in stack), *(f.code for f in stack)])
    return any(h in text for h in SYNC_HINTS)


def _lagging_worker(facts: Facts) -> tuple[str, str, str] | None:
    """A worker that is alive but not waiting where the others wait, or far behind in steps:
    (role, why, the dump file that shows it)."""
    for role, why in facts.outliers:
        if role.split(":")[0] in ("worker", "chief"):
            pid = facts.pid_by_role.get(role)
            return role, why, facts.sources.pyspy(pid) if pid is not None else "manifest.json"
    for m in facts.members:
        if m.job != "worker" or m.pid is None:
            continue
        mine = facts.threads_of(m.pid)
        if mine and not any(t.waits_on is WaitKind.SESSION_RUN for t in mine):
            busy = [t for t in mine if t.status in (Status.BUSY, Status.STUCK)]
            if busy:
                why = f"not in session.run: {frames_text(busy[0].stack, 3)}"
                return m.role, why, facts.sources.pyspy(m.pid)
    steps = {
        f.role: (f.last_step, f.source)
        for f in facts.logs.values()
        if f.last_step is not None and f.role.split(":")[0] in ("worker", "chief")
    }
    if len(steps) >= 2:
        low_role = min(steps, key=lambda r: steps[r][0] or 0)
        high = max(s or 0 for s, _ in steps.values())
        low = steps[low_role][0] or 0
        if high - low >= 2:
            return (
                low_role,
                f"its last logged step is {low}, others reached {high}",
                steps[low_role][1],
            )
    return None
