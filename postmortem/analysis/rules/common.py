"""Small helpers the rules share: naming culprits and describing threads."""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Culprit, Evidence
from postmortem.analysis.roles import host_of, is_local
from postmortem.analysis.threads import ThreadView

MIN_WRITE_RATE = 256 * 1024  # bytes/s: more than logging, a stream of checkpoint data


def culprit(facts: Facts, role: str | None, state: str = "") -> Culprit | None:
    if role is None:
        return None
    member = facts.member(role)
    pid = facts.pid_by_role.get(role)
    if member is not None and member.pid is None and member.address:
        # An absent member lives where the cluster spec says; loopback means this host.
        host = facts.host if is_local(member.address, facts.host) else host_of(member.address)
    else:
        host = facts.host
    return Culprit(role=role, pid=pid, host=host, state=state)


def thread_evidence(facts: Facts, thread: ThreadView, why: str = "") -> Evidence:
    stack = thread.frames_text()
    states = f"kernel state {thread.states}" if thread.states else ""
    cpu = f"CPU {thread.cpu_seconds:.2f}s over {thread.elapsed:.1f}s"
    inner = thread.innermost
    at = (
        f" at {inner.filename.rsplit('/', 1)[-1]}:{inner.line} `{inner.code}`"
        if inner and inner.code
        else ""
    )
    text = f"{thread.label} is {thread.status}" + (f" ({why})" if why else "")
    text += f": {stack}{at}; {states}, {cpu}" if stack else f"; {states}, {cpu}"
    if thread.wchan:
        text += f", wchan {thread.wchan}"
    return Evidence(text, f"processes/{thread.pid}/round-*/pyspy.json", facts.role(thread.pid))


def main_thread(threads: list[ThreadView]) -> ThreadView | None:
    for t in threads:
        if t.name == "MainThread" or t.tid == t.pid:
            return t
    return threads[0] if threads else None


def describe_wait(thread: ThreadView) -> str:
    if thread.in_save:
        return "Saver.save -> session.run"
    if thread.waits_on == "session-run":
        return "session.run"
    if thread.waits_on == "session-create":
        return "session creation"
    return thread.waits_on or "a wait"
