"""Training is stuck and the save is only a symptom (tensorflow#12090).

Workers wait in session.run of the train op (sync-replica token queues, gradient
accumulators), saves keep completing (the Supervisor logs "Saving checkpoint" before each
one), and one replica has stopped contributing: stopped, dead, or stuck elsewhere.
"""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Evidence, Finding, HangClass
from postmortem.analysis.rules.common import culprit, thread_evidence
from postmortem.analysis.threads import ThreadView

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
        if t.status == "stuck" and t.waits_on == "session-run" and not t.in_save
    ]
    if not stuck_train:
        return []
    evidence: list[Evidence] = []
    sync_threads = [t for t in facts.threads if _mentions_sync(t)]
    saves_continue = [f for f in facts.logs.values() if f.saves_after_last_step >= 2]
    savers_stuck = [t for t in facts.threads if t.in_save and t.status == "stuck"]
    score = 0.35
    if sync_threads:
        score += 0.2
        evidence += [thread_evidence(facts, t, "sync-replica machinery") for t in sync_threads[:2]]
    if saves_continue:
        score += 0.2
        f = saves_continue[0]
        evidence.append(
            Evidence(
                f"{f.role} logged {f.saves_after_last_step} 'Saving checkpoint' lines after its "
                f"last step line (step {f.last_step}): saves complete, steps do not advance",
                f"log of {f.role}",
                f.role,
            )
        )
    if savers_stuck:
        score -= 0.3  # a save that itself does not return is another class's case
    evidence += [thread_evidence(facts, t, "train op does not finish") for t in stuck_train[:3]]

    # The culprit: a worker replica that cannot contribute.
    workers = [
        h for h in facts.health.values() if h.member.job in ("worker", "chief") and h.unresponsive
    ]
    role = None
    state = ""
    if workers:
        role, state = workers[0].member.role, workers[0].problems[0]
        score += 0.2
        evidence += workers[0].evidence()
    else:
        lagging = _lagging_worker(facts)
        if lagging:
            role, state = lagging
            score += 0.1
            evidence.append(Evidence(f"{role}: {state}", f"log of {role}", role))
    if any(h.member.job == "ps" and h.unresponsive for h in facts.health.values()):
        score -= 0.3  # a ps that cannot answer stalls every step: peer-unresponsive's case
    stalled_roles = sorted({facts.role(t.pid) for t in stuck_train})
    op = f"session.run(train_op) on {', '.join(stalled_roles)}"
    if sync_threads:
        op += " waiting for sync-replica tokens / gradients"
    summary = (
        f"Training is stalled: {', '.join(stalled_roles)} wait in session.run of the train "
        f"op"
        + (f" because {role} is {state}" if role else "")
        + ". Checkpoint saves are a symptom, not the cause."
    )
    return [
        Finding(
            HangClass.TRAINING_STALLED,
            max(0.05, min(score, 0.92)),
            summary,
            FIX,
            culprit(facts, role, state),
            op,
            tuple(evidence),
        )
    ]


def _mentions_sync(thread: ThreadView) -> bool:
    """A sync-replica hint in the thread's name or in a function or source line of its stack."""
    stack = thread.python_stack
    text = "\0".join([thread.name, *(f.function for f in stack), *(f.code for f in stack)])
    return any(h in text for h in SYNC_HINTS)


def _lagging_worker(facts: Facts) -> tuple[str, str] | None:
    """A worker that is alive but not waiting where the others wait, or far behind in steps."""
    for role, why in facts.outliers:
        if role.split(":")[0] in ("worker", "chief"):
            return role, why
    for m in facts.members:
        if m.job != "worker" or m.pid is None:
            continue
        mine = facts.threads_of(m.pid)
        if mine and not any(t.waits_on == "session-run" for t in mine):
            busy = [t for t in mine if t.status in ("busy", "stuck")]
            if busy:
                return m.role, f"not in session.run: {busy[0].frames_text(3)}"
    steps = {
        f.role: f.last_step
        for f in facts.logs.values()
        if f.last_step is not None and f.role.split(":")[0] in ("worker", "chief")
    }
    if len(steps) >= 2:
        low_role = min(steps, key=lambda r: steps[r] or 0)
        high = max(s or 0 for s in steps.values())
        low = steps[low_role] or 0
        if high - low >= 2:
            return low_role, f"its last logged step is {low}, others reached {high}"
    return None
