"""What the rules share: a case that gathers evidence and weight, culprits, thread facts.

A rule reads `Facts`, adds what it sees to a `Case` (each piece of evidence with the
weight it carries), and turns the case into a `Finding`. Ranking findings against each
other is not a rule's business: `postmortem.analysis.analyze` does it in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from postmortem.analysis.facts import Facts
from postmortem.analysis.threads import frames_text, is_save_frame
from postmortem.model import Culprit, Evidence, Finding, HangClass, Thread, WaitKind

FLOOR = 0.05  # a finding that fired keeps at least this confidence


@dataclass
class Case:
    """Evidence for one hang class, and how much it weighs."""

    hang_class: HangClass
    score: float = 0.0
    evidence: list[Evidence] = field(default_factory=list)

    def add(self, weight: float, *evidence: Evidence) -> None:
        self.score += weight
        self.evidence.extend(evidence)

    def finding(
        self,
        summary: str,
        fix: str,
        culprit: Culprit | None = None,
        blocking_op: str = "",
        cap: float = 0.95,
    ) -> Finding:
        return Finding(
            self.hang_class,
            round(max(FLOOR, min(self.score, cap)), 3),
            summary,
            fix,
            culprit,
            blocking_op,
            tuple(self.evidence),
        )


def culprit(facts: Facts, role: str | None, state: str = "") -> Culprit | None:
    if role is None:
        return None
    member = facts.member(role)
    host = member.host if member is not None else facts.host
    return Culprit(role=role, pid=facts.pid_by_role.get(role), host=host, state=state)


def thread_evidence(facts: Facts, thread: Thread, why: str = "") -> Evidence:
    stack = frames_text(thread.stack)
    states = f"kernel state {thread.states}" if thread.states else ""
    cpu = f"CPU {thread.cpu_seconds:.2f}s over {thread.elapsed_s:.1f}s"
    inner = thread.stack.innermost
    at = f" at {inner.short_file}:{inner.line} `{inner.code}`" if inner and inner.code else ""
    text = f"{thread.label} is {thread.status.value}" + (f" ({why})" if why else "")
    text += f": {stack}{at}; {states}, {cpu}" if stack else f"; {states}, {cpu}"
    if thread.wchan:
        text += f", wchan {thread.wchan}"
    if thread.decided_by:
        text += f"; {thread.status.value} because: {thread.decided_by}"
    source = facts.sources.pyspy(thread.pid) if thread.stack else facts.sources.procfs(thread.pid)
    return Evidence(text, source, thread.role)


def member_evidence(facts: Facts, role: str) -> list[Evidence]:
    """Each problem of a member as evidence, from the file that shows it."""
    health = facts.health.get(role)
    if health is None:
        return []
    return [Evidence(f"{role}: {p}", health.source, role) for p in health.problems]


def describe_wait(thread: Thread) -> str:
    if thread.in_save and thread.waits_on is WaitKind.COLLECTIVE:
        return f"{_save_call(thread)} -> a collective"
    if thread.in_save and thread.waits_on is WaitKind.TF_OP:
        inner = thread.stack.innermost
        return f"{_save_call(thread)} -> {inner.function if inner else 'a TF op'}"
    if thread.in_save:
        return "Saver.save -> session.run"
    if thread.waits_on is WaitKind.TF_OP:
        inner = thread.stack.innermost
        return inner.function if inner else "a TF op"
    if thread.waits_on is WaitKind.COLLECTIVE:
        return "a collective"
    if thread.waits_on is WaitKind.SESSION_RUN:
        return "session.run"
    if thread.waits_on is WaitKind.SESSION_CREATE:
        return "session creation"
    return thread.waits_on.value or "a wait"


def _save_call(thread: Thread) -> str:
    """The outermost save frame: the user's call (Checkpoint.save, Model.save_weights)."""
    for frame in reversed(thread.stack.frames):
        if is_save_frame(frame):
            return frame.function
    return "a save"


def save_frames(thread: Thread) -> bool:
    return any(is_save_frame(f) for f in thread.stack)


def flight_evidence(facts: Facts, pids: set[int] | None = None) -> list[Evidence]:
    """What the flight recorders of these processes (all, by default) saw before the hang:
    a save that began and never ended, the moment steps stopped, the last traced step."""
    window = facts.window
    end = window[1] if window else None
    out = []
    for record in facts.flights:
        if pids is not None and record.pid not in pids:
            continue
        save = record.open_save
        if save is not None:
            step = f" at global step {save.global_step}" if save.global_step is not None else ""
            took = [s.seconds for s in record.saves if s.ended is not None and s.seconds]
            usual = f"; its earlier saves took {max(took):.1f}s at most" if took else ""
            so_far = f"{save.seconds:.0f}s" if save.seconds is not None else "a while"
            out.append(
                Evidence(
                    f"flight recorder of {record.role}: a save{step} began and had not ended "
                    f"{so_far} later{usual}",
                    record.source,
                    record.role,
                )
            )
        if record.steps_stopped is not None and end is not None:
            typical = (
                f"; its steps took {record.typical_step_s:.3f}s"
                if record.typical_step_s is not None
                else ""
            )
            last = record.steps[-1].global_step if record.steps else None
            at = f" (global step {last})" if last is not None else ""
            out.append(
                Evidence(
                    f"flight recorder of {record.role}: its last step{at} ended "
                    f"{end - record.steps_stopped:.0f}s before the capture ended{typical}",
                    record.source,
                    record.role,
                )
            )
        trace = record.last_trace
        if trace is not None and (save is not None or record.steps_stopped is not None):
            roles = sorted({op.role or op.device for op in trace.ops})
            out.append(
                Evidence(
                    f"flight recorder of {record.role}: its last traced step"
                    + (f" (global step {trace.global_step})" if trace.global_step else "")
                    + f" ran {len(trace.ops)} ops on {', '.join(roles)}",
                    record.source,
                    record.role,
                )
            )
    return out
