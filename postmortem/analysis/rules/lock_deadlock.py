"""Python threads wait on locks held by each other (a hook or listener and the loop).

For each thread stuck at a `with X:` / `X.acquire()` line, the locks it holds are the
`with` blocks enclosing the current lines of its frames (from the captured source). A
cycle in waits-for-lock-held-by is a deadlock.
"""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.rules.common import Case, culprit, flight_evidence, thread_evidence
from postmortem.analysis.threads import enclosing_with_locks, frames_text
from postmortem.model import Evidence, Finding, HangClass, Status, Thread, WaitKind

HANG_CLASS = HangClass.LOCK_DEADLOCK

FIX = (
    "Take the locks in one global order everywhere (or merge them into one), and never hold "
    "a lock across session.run or Saver.save inside hooks and CheckpointSaverListeners; "
    "acquire with a timeout (lock.acquire(timeout=...)) and log when it expires."
)


def _norm(expr: str) -> str:
    return expr.replace("self.", "").strip()


def evaluate(facts: Facts) -> list[Finding]:
    findings = []
    by_pid: dict[int, list[Thread]] = {}
    for t in facts.threads:
        if t.status is Status.STUCK and t.waits_on is WaitKind.LOCK:
            by_pid.setdefault(t.pid, []).append(t)
    for pid, waiters in by_pid.items():
        findings.append(_process_locks(facts, pid, waiters))
    return findings


def _process_locks(facts: Facts, pid: int, waiters: list[Thread]) -> Finding:
    sources = facts.source_lines(pid)
    role = facts.role(pid)
    held: dict[int, list[str]] = {}
    for t in facts.threads_of(pid):
        locks: list[str] = []
        for depth, frame in enumerate(t.stack):
            for expr in enclosing_with_locks(sources, frame):
                if depth == 0 and t.waits_on is WaitKind.LOCK and _norm(expr) == _norm(t.lock_expr):
                    continue
                locks.append(_norm(expr))
        held[t.tid] = locks
    holder_of: dict[str, Thread] = {}
    for t in facts.threads_of(pid):
        for lock in held[t.tid]:
            holder_of.setdefault(lock, t)
    edges = {w.tid: holder_of.get(_norm(w.lock_expr)) for w in waiters}
    cycle = _find_cycle(edges, {w.tid: w for w in waiters})
    case = Case(HANG_CLASS)
    case.add(
        0, *(thread_evidence(facts, w, f"waits for lock `{w.lock_expr}`") for w in waiters[:4])
    )
    for w in waiters:
        h = edges[w.tid]
        if h is not None:
            case.add(
                0,
                Evidence(
                    f"`{w.lock_expr}` is held by {h.label}: it is inside `with {w.lock_expr}:`",
                    facts.sources.sources(pid),
                    role,
                ),
            )
    case.add(0, *flight_evidence(facts, {pid}))
    if cycle:
        chain = " -> ".join(
            f"{t.label} waits for `{t.lock_expr}` held by {_label(edges[t.tid])}" for t in cycle
        )
        case.add(0.92)
        summary = (
            f"Deadlock in {role}: {chain}. Neither can proceed, so the "
            "save (or the training step) never runs."
        )
    elif len(waiters) >= 2 and all(w.cpu_seconds == 0 for w in waiters):
        chain = "; ".join(f"{w.label} waits for `{w.lock_expr}`" for w in waiters)
        case.add(0.6)
        summary = f"Threads of {role} wait on locks and never proceed: {chain}."
    else:
        w = waiters[0]
        h = edges[w.tid]
        chain = f"{w.label} waits for `{w.lock_expr}`" + (
            f" held by {h.label}, which is {h.status.value} in {frames_text(h.stack, 3)}"
            if h
            else ""
        )
        case.add(0.45 if h and h.status is Status.STUCK else 0.3)
        summary = f"A thread of {role} waits on a lock that is never released: {chain}."
    return case.finding(summary, FIX, culprit(facts, role, "threads deadlocked on locks"), chain)


def _find_cycle(edges: dict[int, Thread | None], waiters: dict[int, Thread]) -> list[Thread]:
    for start in edges:
        seen: list[int] = []
        current: int | None = start
        while current is not None and current in edges and current not in seen:
            seen.append(current)
            nxt = edges[current]
            current = nxt.tid if nxt is not None else None
        if current is not None and current in seen:
            return [waiters[t] for t in seen[seen.index(current) :]]
    return []


def _label(thread: Thread | None) -> str:
    return thread.label if thread is not None else "?"
