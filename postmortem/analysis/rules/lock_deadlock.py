"""Python threads wait on locks held by each other (a hook or listener and the loop).

For each thread stuck at a `with X:` / `X.acquire()` line, the locks it holds are the
`with` blocks enclosing the current lines of its frames (from the captured source). A
cycle in waits-for-lock-held-by is a deadlock.
"""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Evidence, Finding, HangClass
from postmortem.analysis.rules.common import culprit, thread_evidence
from postmortem.analysis.threads import ThreadView, enclosing_with_locks

FIX = (
    "Take the locks in one global order everywhere (or merge them into one), and never hold "
    "a lock across session.run or Saver.save inside hooks and CheckpointSaverListeners; "
    "acquire with a timeout (lock.acquire(timeout=...)) and log when it expires."
)


def _norm(expr: str) -> str:
    return expr.replace("self.", "").strip()


def evaluate(facts: Facts) -> list[Finding]:
    findings = []
    by_pid: dict[int, list[ThreadView]] = {}
    for t in facts.threads:
        if t.status == "stuck" and t.waits_on == "lock":
            by_pid.setdefault(t.pid, []).append(t)
    for pid, waiters in by_pid.items():
        sources = facts.dump.sources.get(pid, {})
        held: dict[int, list[str]] = {}
        for t in facts.threads_of(pid):
            locks: list[str] = []
            for depth, frame in enumerate(t.python_stack):
                for expr in enclosing_with_locks(sources, frame):
                    if depth == 0 and t.waits_on == "lock" and _norm(expr) == _norm(t.lock_expr):
                        continue
                    locks.append(_norm(expr))
            held[t.tid] = locks
        holder_of: dict[str, ThreadView] = {}
        for t in facts.threads_of(pid):
            for lock in held[t.tid]:
                holder_of.setdefault(lock, t)
        edges = {w.tid: holder_of.get(_norm(w.lock_expr)) for w in waiters}
        cycle = _find_cycle(edges, {w.tid: w for w in waiters})
        evidence = [
            thread_evidence(facts, w, f"waits for lock `{w.lock_expr}`") for w in waiters[:4]
        ]
        for w in waiters:
            h = edges[w.tid]
            if h is not None:
                evidence.append(
                    Evidence(
                        f"`{w.lock_expr}` is held by {h.label}: it is inside `with {w.lock_expr}:`",
                        f"processes/{pid}/sources.json",
                        facts.role(pid),
                    )
                )
        if cycle:
            chain = " -> ".join(
                f"{t.label} waits for `{t.lock_expr}` held by {_label(edges[t.tid])}" for t in cycle
            )
            confidence = 0.92
            summary = (
                f"Deadlock in {facts.role(pid)}: {chain}. Neither can proceed, so the "
                "save (or the training step) never runs."
            )
        elif len(waiters) >= 2 and all(w.cpu_seconds == 0 for w in waiters):
            chain = "; ".join(f"{w.label} waits for `{w.lock_expr}`" for w in waiters)
            confidence = 0.6
            summary = f"Threads of {facts.role(pid)} wait on locks and never proceed: {chain}."
        else:
            w = waiters[0]
            h = edges[w.tid]
            chain = f"{w.label} waits for `{w.lock_expr}`" + (
                f" held by {h.label}, which is {h.status} in {h.frames_text(3)}" if h else ""
            )
            confidence = 0.45 if h and h.status == "stuck" else 0.3
            summary = (
                f"A thread of {facts.role(pid)} waits on a lock that is never released: {chain}."
            )
        findings.append(
            Finding(
                HangClass.LOCK_DEADLOCK,
                confidence,
                summary,
                FIX,
                culprit(facts, facts.role(pid), "threads deadlocked on locks"),
                chain,
                tuple(evidence),
            )
        )
    return findings


def _find_cycle(
    edges: dict[int, ThreadView | None], waiters: dict[int, ThreadView]
) -> list[ThreadView]:
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


def _label(thread: ThreadView | None) -> str:
    return thread.label if thread is not None else "?"
