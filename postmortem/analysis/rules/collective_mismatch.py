"""Members wait inside a collective that another live member never enters (TF2
MultiWorkerMirroredStrategy).

Every worker of a MultiWorkerMirroredStrategy must run every collective. A save that runs
on some workers only (`if chief:` around `Checkpoint.save`, `save_weights`, `model.save`, a
Keras callback) reads sync-on-read variables (metric totals, batch-norm statistics), which
all-reduces them: the savers wait in `collective_reduce_v2` for peers that are somewhere
else, forever and silently. The discriminator is the absence: the peer that does not join
has no thread inside a collective at all. A peer that is stopped or dead is
peer-unresponsive's finding, not this one.

When the peer's next collective has another shape (tf_keras `fit` goes on to its next
training step), TensorFlow aborts every member instead: "Shape mismatch in the collective
instance N". The processes end and the logs tell the story: the savers' failing op ran
eagerly, outside any tf.function (the save's all-reduce); the peer's failed inside its
training function. The peer that was in its training step never joined the save's
collective.
"""

from __future__ import annotations

from postmortem.analysis.cluster import COLLECTIVE_JOBS
from postmortem.analysis.facts import Facts
from postmortem.analysis.logs import LogFacts
from postmortem.analysis.rules.common import Case, culprit, flight_evidence, thread_evidence
from postmortem.analysis.threads import is_collective_frame, is_save_frame
from postmortem.model import Evidence, Finding, HangClass, Member, Status, Thread, WaitKind

HANG_CLASS = HangClass.COLLECTIVE_MISMATCH

FIX = (
    "Run the same collectives on every worker. Save on all workers, not only the chief: the "
    "chief to the real checkpoint directory, the others to a temporary directory they delete "
    "afterwards (as tf_keras ModelCheckpoint does); the same for anything under `if chief:` "
    "or another per-worker condition that reads sync-on-read variables (metrics, batch-norm "
    "statistics) or calls strategy.reduce. So that a missing peer raises instead of hanging "
    "forever, create the strategy with communication_options="
    "tf.distribute.experimental.CommunicationOptions(timeout_seconds=...) longer than the "
    "slowest step or save: the collective then fails with DeadlineExceeded."
)


def evaluate(facts: Facts) -> list[Finding]:
    group = [m for m in facts.members if m.job in COLLECTIVE_JOBS]
    waiting: dict[str, list[Thread]] = {}
    for m in group:
        if m.pid is not None and m.pid not in facts.exited_pids:
            stuck = [t for t in facts.in_collective(m.pid) if t.status is Status.STUCK]
            if stuck:
                waiting[m.role] = stuck
    if not waiting:
        return _from_logs(facts)
    outside = [m for m in group if m.role not in waiting and _live_elsewhere(facts, m)]
    if not outside:
        return []  # every peer is inside a collective, stopped or gone: not this hang
    return [_finding(facts, waiting, outside)]


def _live_elsewhere(facts: Facts, member: Member) -> bool:
    """Captured, running, answering, seen (a Python stack), no thread of it inside a
    collective, none busy in the TF runtime (a step on its way to the collective, an
    input pipeline filling up: slow, not absent) and none inside a save (every worker
    saving, one caught a moment before the save's all-reduce: on its way, not elsewhere)."""
    if member.pid is None or member.pid in facts.exited_pids:
        return False
    health = facts.health.get(member.role)
    if health is not None and health.unresponsive:
        return False
    if set(facts.process_states.get(member.pid, "")) & {"T", "t", "Z", "X"}:
        return False
    threads = facts.threads_of(member.pid)
    if not any(t.python and t.stack for t in threads):
        return False  # py-spy did not see it: no evidence of where it is
    if any(t.waits_on is WaitKind.TF_OP and t.status is not Status.PARKED for t in threads):
        return False
    if any(t.in_save for t in threads):
        return False
    return not facts.in_collective(member.pid)


def _finding(facts: Facts, waiting: dict[str, list[Thread]], outside: list[Member]) -> Finding:
    case = Case(HANG_CLASS, 0.6)
    saves = {role: _save_frame(facts, threads) for role, threads in waiting.items()}
    under_save = {role: name for role, name in saves.items() if name}
    for role, threads in waiting.items():
        why = f"inside a collective under {saves[role]}" if saves[role] else "inside a collective"
        case.add(0, *(thread_evidence(facts, t, why) for t in threads[:2]))
    if under_save:
        case.add(0.2)
    for m in outside:
        assert m.pid is not None
        main = _main_thread(facts, m.pid)
        case.add(
            0,
            Evidence(
                f"{m.role} is running and answering but no thread of it is inside a "
                "collective: it never joins the one the others wait in",
                facts.sources.pyspy(m.pid),
                m.role,
            ),
        )
        if main is not None and main.stack:
            case.add(0.1 / len(outside) if main.same_stack else 0,
                     thread_evidence(facts, main, "where it is instead of the collective"))
    waiter_pids = {facts.pid_by_role[r] for r in waiting if r in facts.pid_by_role}
    case.add(0, *flight_evidence(facts, waiter_pids))
    if not any(f.grpc_errors for f in facts.logs.values()):
        case.add(0.05)  # silent, as this hang is: no peer reported an error
    first = outside[0]
    waiters = ", ".join(sorted(waiting))
    absent = ", ".join(m.role for m in outside)
    op_name = _collective_op(waiting)
    context = ""
    if under_save:
        role, name = sorted(under_save.items())[0]
        context = f" under {name} on {role}"
    summary = (
        f"{waiters} wait{'s' if len(waiting) == 1 else ''} inside a collective ({op_name})"
        f"{context} that {absent} never join{'s' if len(outside) == 1 else ''}: "
        f"{'it is' if len(outside) == 1 else 'they are'} running elsewhere, with no thread "
        "in any collective. A MultiWorkerMirroredStrategy collective needs every worker; code "
        "that runs on some workers only (a chief-only save reads sync-on-read variables, "
        "which all-reduces them) waits for the others forever, and TensorFlow prints nothing."
    )
    op = f"{op_name}{context}, waiting for {absent} to join"
    state = "running, never enters the collective"
    return case.finding(summary, FIX, culprit(facts, first.role, state), op)


def _save_frame(facts: Facts, threads: list[Thread]) -> str:
    """The save the process's collective runs under ('Checkpoint.save'), or ''."""
    pid = threads[0].pid
    for t in [*threads, *facts.threads_of(pid)]:
        for frame in reversed(t.stack.frames):  # outermost first: the user's call
            if is_save_frame(frame):
                return frame.function
    return ""


def _collective_op(waiting: dict[str, list[Thread]]) -> str:
    """The innermost collective frame of the waiters: the op itself when a thread is in it
    (collective_reduce_v2), else the strategy's call."""
    found = [
        (depth, frame.function)
        for threads in waiting.values()
        for t in threads
        for depth, frame in enumerate(t.stack)
        if is_collective_frame(frame)
    ]
    return min(found)[1] if found else "a collective"


def _main_thread(facts: Facts, pid: int) -> Thread | None:
    main = facts.main_threads.get(pid)
    if main is not None:
        return main
    python = [t for t in facts.threads_of(pid) if t.python and t.stack]
    return python[0] if python else None


def _from_logs(facts: Facts) -> list[Finding]:
    """The collective aborted on a shape mismatch: whose failing op ran outside the
    training function (the extra collective) and whose inside it (the peer that went on)."""
    aborted = [log for log in facts.logs.values() if log.collective_mismatch is not None]
    extra = [log for log in aborted if log.mismatch_outside_function]
    stepping = [log for log in aborted if log.mismatch_outside_function is False]
    if not extra:
        return []
    extra_tasks = {log.task for log in extra}
    if stepping:
        culprits = sorted({log.task for log in stepping} - extra_tasks)
    else:  # only the extra side's log: the peer is another member of the collective
        culprits = [m.role for m in facts.members
                    if m.job in COLLECTIVE_JOBS and m.role not in extra_tasks]
    case = Case(HANG_CLASS, 0.5 if culprits else 0.4)
    case.add(0.15 if stepping else 0.0)
    for log in extra:
        case.add(0, Evidence(
            f"{_whose(log)} shows the collective aborted on mismatched shapes while running a "
            f"collective eagerly, outside any tf.function ([Op:{log.failed_ops[-1]}]): "
            f"{(log.collective_mismatch or '')[:300]}",
            log.source, log.task))
    for log in stepping:
        case.add(0, Evidence(
            f"{_whose(log)} shows the same abort inside its training function "
            f"([Op:{log.failed_ops[-1]}]): it was in its training step, not in that collective",
            log.source, log.task))
    saving = [log for log in extra if log.failed_saves or log.save_lines]
    if saving:
        case.add(0.1, *(Evidence(f"{_whose(log)} was saving a checkpoint when it failed",
                                 log.source, log.task) for log in saving[:2]))
    savers = ", ".join(sorted(extra_tasks))
    peers = ", ".join(culprits) or "another worker (its log is not in the dump)"
    under = " (a save)" if saving else ""
    summary = (
        f"{savers} ran a collective outside the training step{under} that {peers} never "
        f"joined: {'it' if len(culprits) == 1 else 'they'} went on with the training step, "
        "whose collective has another shape, and TensorFlow aborted every member with "
        "'Shape mismatch in the collective instance'. A MultiWorkerMirroredStrategy "
        "collective needs every worker; code that runs on some workers only (a chief-only "
        "ModelCheckpoint or save reads sync-on-read variables, which all-reduces them) makes "
        "the workers' collectives disagree. Had the shapes matched, it would have hung."
    )
    op = (f"an eager collective{under} on {savers} that {peers} never joined, aborted on a "
          "shape mismatch")
    state = "in its training step, never joined the collective"
    found = culprit(facts, culprits[0], state) if culprits else None
    return [case.finding(summary, FIX, found, op, cap=0.85)]


def _whose(log: LogFacts) -> str:
    return f"{log.task}'s log ({log.source})" if log.task != "log" else f"the log {log.source}"
