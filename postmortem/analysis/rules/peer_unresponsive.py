"""A thread waits in session.run (a save, most tellingly) on a peer that cannot answer.

The peer is stopped, dead, stuck in the kernel, or does not accept connections. A save
has no gRPC deadline, so the waiter blocks forever (HANGS.md: ps frozen during save).
"""

from __future__ import annotations

from itertools import islice

from postmortem.analysis.cluster import Health
from postmortem.analysis.facts import Facts
from postmortem.analysis.roles import role_from_device, task_device
from postmortem.analysis.rules.common import (
    Case,
    culprit,
    describe_wait,
    flight_evidence,
    member_evidence,
    thread_evidence,
)
from postmortem.model import Evidence, Finding, HangClass, Status, WaitKind

HANG_CLASS = HangClass.PEER_UNRESPONSIVE
WAITS = (WaitKind.SESSION_RUN, WaitKind.TF_OP, WaitKind.COLLECTIVE)  # v1 run, TF2 op or collective


def _fix(role: str, job: str) -> str:
    return (
        f"Bring {role} back: if it is stopped, `kill -CONT` it; if it died or hangs, restart "
        f"it (and find out why from its log / the host's dmesg, e.g. OOM killer). So that a "
        f"dead {job} cannot hang a save forever, give session.run a deadline "
        f"(tf.compat.v1.ConfigProto(operation_timeout_in_ms=...) or "
        f"RunOptions(timeout_in_ms=...)) and use MonitoredTrainingSession, which recreates "
        f"the session after an error."
    )


def _fix_tf2(role: str) -> str:
    return (
        f"Bring {role} back: if it is stopped, `kill -CONT` it; if it died, find out why (its "
        f"log, the host's dmesg: the OOM killer) and restart the job from its last "
        f"checkpoint: a TF2 strategy cannot replace a lost task in a running job. "
        f"MultiWorkerMirroredStrategy's heartbeats turn a lost worker into an error within "
        f"seconds; ParameterServerStrategy has no heartbeat by default and a remote op has no "
        f"deadline, so a frozen ps hangs the coordinator silently: have your scheduler watch "
        f"every task."
    )


def _rank(health: Health, waited: set[str]) -> tuple[int, int, int]:
    m = health.member
    return (m.role in waited, m.job == "ps", len(health.problems))


def evaluate(facts: Facts) -> list[Finding]:
    waiters = [t for t in facts.threads if t.status is Status.STUCK and t.waits_on in WAITS]
    bad = [h for h in facts.health.values() if h.unresponsive]
    if not waiters:
        return _failing_calls(facts) or _lost_tasks(facts) or _frozen_ps_unobserved(facts)
    if not bad:
        return []
    waited = {t for e in facts.wait_for for t in e.waits_on}
    suspect = max(bad, key=lambda h: _rank(h, waited))
    role = suspect.member.role
    savers = [t for t in waiters if t.in_save]
    case = Case(HANG_CLASS, 0.6)
    case.add(0.25 if savers else 0.0)
    case.add(0.1 if suspect.member.job == "ps" else 0.0)
    case.add(0, *member_evidence(facts, role))
    case.add(
        0, *(thread_evidence(facts, t, "waiting on the cluster") for t in (savers or waiters)[:3])
    )
    case.add(
        0,
        *islice(
            (
                Evidence(
                    f"wait-for: {w.role} -> {role} ({w.why})",
                    facts.sources.procfs(facts.pid_by_role[w.role]),
                    w.role,
                )
                for e in facts.wait_for
                if role in e.waits_on
                for w in e.waiters
                if w.role in facts.pid_by_role
            ),
            4,
        ),
    )
    recorded = flight_evidence(facts, {t.pid for t in waiters})
    case.add(0.05 if recorded else 0.0, *recorded)
    lead = (savers or waiters)[0]
    what = describe_wait(lead)
    op = f"{what} on {lead.role} ({lead.label}) waiting for {role}"
    summary = (
        f"{lead.role} is blocked in {what} because {role} does not answer: {suspect.problems[0]}."
    )
    if savers:
        summary += " The checkpoint save waits on it with no deadline, so it never returns."
    tf2 = lead.waits_on in (WaitKind.TF_OP, WaitKind.COLLECTIVE)
    fix = _fix_tf2(role) if tf2 else _fix(role, suspect.member.job)
    return [case.finding(summary, fix, culprit(facts, role, suspect.problems[0]), op)]


def _failing_calls(facts: Facts) -> list[Finding]:
    """Nothing blocks, but every call to a peer fails: a dead peer with a job that retries.

    A killed ps refuses connections, so a save fails at once with UNAVAILABLE; a job that
    retries its save never checkpoints again. The log names the remote task.
    """
    counts: dict[str, int] = {}
    saves_failed: dict[str, int] = {}
    sources: dict[str, str] = {}
    for log in facts.logs.values():
        for device, count in log.unreachable_targets.items():
            role = role_from_device(device)
            if role is not None and role != log.role:
                counts[role] = counts.get(role, 0) + count
                saves_failed[log.role] = log.failed_saves
                sources[log.role] = log.source
    if not counts:
        return []
    role = max(
        counts,
        key=lambda r: (facts.health.get(r) is not None and facts.health[r].unresponsive, counts[r]),
    )
    health = facts.health.get(role)
    member = facts.member(role)
    confirmed = bool(health and health.unresponsive)
    reporter = max(saves_failed, key=lambda r: saves_failed[r])
    in_save = saves_failed[reporter] > 0
    case = Case(HANG_CLASS, 0.5)
    case.add(0.25 if confirmed else 0.0)
    state = health.problems[0] if confirmed and health else "refuses connections"
    what = "Saver.save" if in_save else "session.run"
    case.add(
        0,
        Evidence(
            f"{counts[role]} gRPC error(s) in the logs: {role} could not be reached "
            "(UNAVAILABLE / connection refused)",
            sources[reporter],
            reporter,
        ),
    )
    if in_save:
        case.add(
            0.1,
            Evidence(
                f"{saves_failed[reporter]} traceback(s) through Saver.save in "
                f"the log of {reporter}: every save attempt fails",
                sources[reporter],
                reporter,
            ),
        )
    case.add(0, *member_evidence(facts, role))
    if member is not None and member.pid is None:
        case.add(0, Evidence(f"{role} is not in the dump", "manifest.json", role))
    pid = facts.pid_by_role.get(reporter)
    # The reporter's process ended: it exited during the capture, or the dump holds logs
    # alone (no process of the job was left to capture).
    ended = (pid is not None and pid in facts.exited_pids) or (
        pid is None and not any(m.captured for m in facts.members)
    )
    if ended:
        # Its process ended (a TF2 job crashes on a lost peer): a failure, not a retry loop.
        what = "the save" if in_save else "a call"
        where = reporter if pid is not None else f"the job of {sources[reporter]}"
        summary = (
            f"{what.capitalize()} on {where} failed because {role} could not be reached "
            f"({state}), and the process ended: it did not hang, it crashed."
        )
        fix = _fix_tf2(role)
    else:
        summary = (
            f"{what} on {reporter} fails again and again because {role} cannot be reached "
            f"({state}); the job retries, so it never hangs outright but never saves a "
            "checkpoint either."
        )
        fix = _fix(role, role.split(":")[0])
    op = f"{what} on {reporter} failing with UNAVAILABLE from {task_device(role)} (retried)"
    if ended:
        op = f"{what} failed with UNAVAILABLE: {role} ({task_device(role)}) could not be reached"
    return [case.finding(summary, fix, culprit(facts, role, state), op, cap=0.9)]


def _lost_tasks(facts: Facts) -> list[Finding]:
    """A TF2 runtime declared a peer lost (MWMS heartbeats, a PSS coordinator's failure
    lines) and aborted what waited on it: the save failed, it did not hang; name the peer."""
    named: dict[str, tuple[str, str, str]] = {}  # role -> (the line, its source, reporter)
    for log in facts.logs.values():
        for device, line in log.lost_tasks.items():
            role = role_from_device(device)
            if role is not None and role != log.task:
                named.setdefault(role, (line, log.source, log.role))
    if not named:
        return []
    def down(r: str) -> bool:
        h = facts.health.get(r)
        return bool(h and h.unresponsive)

    role = sorted(named, key=lambda r: not down(r))[0]  # one that is down first
    line, source, reporter = named[role]
    health = facts.health.get(role)
    confirmed = bool(health and health.unresponsive)
    member = facts.member(role)
    case = Case(HANG_CLASS, 0.6)
    case.add(0.2 if confirmed else 0.0)
    for lost, (text, where, who) in sorted(named.items(), key=lambda item: item[0] != role):
        case.add(0, Evidence(f"{_whose(facts, who, where)} names {lost} lost: {text[:300]}",
                             where, who))
    case.add(0, *member_evidence(facts, role))
    if member is not None and member.pid is None:
        case.add(0.1, Evidence(f"{role} is not in the dump", "manifest.json", role))
    state = health.problems[0] if confirmed and health else "declared lost by TensorFlow"
    why = f" ({state})" if confirmed else ""
    summary = (
        f"TensorFlow declared {role} lost{why} and aborted the collectives and remote calls "
        f"that waited on it, the save among them ({_whose(facts, reporter, source)} says "
        "so). It did not hang; it failed, and the job needs that task back."
    )
    op = f"collectives and remote ops waiting on {role}, aborted"
    return [case.finding(summary, _fix_tf2(role), culprit(facts, role, state), op, cap=0.9)]


def _whose(facts: Facts, role: str, source: str) -> str:
    """'worker:0's log', or 'the log logs/0-w0.log' for a --log file of no known process."""
    return f"{role}'s log" if role in facts.pid_by_role else f"the log {source}"


def _frozen_ps_unobserved(facts: Facts) -> list[Finding]:
    """A ps that cannot answer stalls every worker, even when no worker's stack was read
    (py-spy failed on it, or only the ps was captured): weaker, but still the lead."""
    stopped = [
        h
        for h in facts.health.values()
        if h.member.job == "ps" and h.member.pid is not None and h.unresponsive
    ]
    if not stopped or any(t.status is Status.BUSY and t.in_save for t in facts.threads):
        return []
    suspect = stopped[0]
    role = suspect.member.role
    case = Case(HANG_CLASS, 0.5)
    case.add(0, *member_evidence(facts, role))
    summary = (
        f"{role} cannot answer ({suspect.problems[0]}): every worker that reads or "
        "saves its variables waits on it. No worker stack shows the wait; capture the "
        "workers too to confirm."
    )
    return [
        case.finding(
            summary,
            _fix(role, "ps"),
            culprit(facts, role, suspect.problems[0]),
            f"any session.run that touches {role}'s variables",
        )
    ]
