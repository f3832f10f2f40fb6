"""A cluster member never came up or cannot be reached at session creation.

TensorFlow logs "CreateSession still waiting for response from worker: /job:ps/..." every
10 s while the session waits; the waiter's stack is in session creation.
"""

from __future__ import annotations

from collections import Counter

from postmortem.analysis.facts import Facts
from postmortem.analysis.roles import role_from_device
from postmortem.analysis.rules.common import Case, culprit, member_evidence, thread_evidence
from postmortem.model import Evidence, Finding, HangClass, Status, WaitKind

HANG_CLASS = HangClass.PEER_UNREACHABLE


def evaluate(facts: Facts) -> list[Finding]:
    waits: Counter[str] = Counter()
    reporters: dict[str, tuple[str, str]] = {}
    for log in facts.logs.values():
        for device in log.create_session_waits:
            waits[device] += 1
            reporters.setdefault(device, (log.role, log.source))
    creating = [
        t
        for t in facts.threads
        if t.waits_on is WaitKind.SESSION_CREATE and t.status is Status.STUCK
    ]
    if not waits and not creating:
        return []
    case = Case(HANG_CLASS)
    role = None
    if waits:
        device, count = waits.most_common(1)[0]
        role = role_from_device(device)
        reporter, source = reporters[device]
        case.add(
            0.7,
            Evidence(
                f"{reporter} logged 'CreateSession still waiting for "
                f"response from worker: {device}' {count} time(s)",
                source,
                reporter,
            ),
        )
    if creating:
        case.add(
            0.2, *(thread_evidence(facts, t, "waiting to create its session") for t in creating[:2])
        )
        if role is None:
            absent = [h for h in facts.health.values() if h.unresponsive]
            role = absent[0].member.role if absent else None
    state = ""
    if role is not None:
        member = facts.member(role)
        health = facts.health.get(role)
        if health and health.problems:
            state = health.problems[0]
            # A session that cannot be created and a member seen not to answer: the same
            # story as TF's "still waiting" line, told by the process table.
            case.add(0.45 if creating else 0.05)
        elif member is not None and member.pid is None:
            state = f"not running at {member.address}" if member.address else "not running"
            case.add(0.05)
        case.add(0, *member_evidence(facts, role))
        if member is not None and member.address:
            spec = health.source if health is not None and member.pid is None else "manifest.json"
            case.add(
                0, Evidence(f"{role} is listed at {member.address} in the cluster spec", spec, role)
            )
    known = facts.member(role) if role else None
    address = known.address if known else None
    fix = (
        f"Start {role or 'the missing task'}"
        + (f" at {address}" if address else "")
        + ", or correct the address in --ps_hosts/--worker_hosts / TF_CONFIG so it matches where "
        "the task listens; check the port is open between hosts (firewall, security group) and "
        "the hostname resolves. Set ConfigProto(device_filters=[...]) so a worker waits only "
        "for the tasks it needs."
    )
    waiter = ", ".join(sorted({t.role for t in creating})) or "a worker"
    op = f"session creation on {waiter} waiting for {role or 'a cluster member'}"
    summary = (
        f"{waiter} cannot create its session: {role or 'a cluster member'} does not "
        f"answer" + (f" ({state})" if state else "") + ". Nothing has trained or saved yet."
    )
    return [case.finding(summary, fix, culprit(facts, role, state or "unreachable"), op)]
