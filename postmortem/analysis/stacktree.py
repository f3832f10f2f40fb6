"""Merged stacks across processes, STAT-style: threads that share a stack form a class.

In a hung data-parallel job most replicas stand at the same place; the process whose
main thread stands elsewhere (or is missing) is often the culprit. `stack_classes` groups
every thread by its Python stack; `outliers` names, per job, the processes whose main
thread is not where the majority's is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from postmortem.analysis.threads import ThreadView

Signature = tuple[str, ...]  # function names, outermost first


@dataclass(frozen=True)
class StackClass:
    signature: Signature
    threads: tuple[tuple[int, int], ...]  # (pid, tid)
    processes: tuple[int, ...]

    @property
    def innermost(self) -> str:
        return self.signature[-1] if self.signature else ""


def signature(thread: ThreadView) -> Signature:
    return tuple(f.function for f in reversed(thread.python_stack))


def stack_classes(threads: list[ThreadView]) -> list[StackClass]:
    """Classes of identical Python stacks, largest first (threads without one are left out)."""
    groups: dict[Signature, list[ThreadView]] = {}
    for thread in threads:
        sig = signature(thread)
        if sig:
            groups.setdefault(sig, []).append(thread)
    classes = [
        StackClass(
            sig, tuple((t.pid, t.tid) for t in members), tuple(sorted({t.pid for t in members}))
        )
        for sig, members in groups.items()
    ]
    classes.sort(key=lambda c: (-len(c.processes), -len(c.threads), c.signature))
    return classes


def main_threads(threads: list[ThreadView]) -> dict[int, ThreadView]:
    out: dict[int, ThreadView] = {}
    for thread in threads:
        if thread.name == "MainThread" or (thread.tid == thread.pid and thread.python_stack):
            out.setdefault(thread.pid, thread)
    return out


def outliers(threads: list[ThreadView], roles: dict[int, str]) -> list[tuple[str, str]]:
    """(role, why) for processes whose main thread differs from their job's majority.

    Needs at least three processes of a job, so that a majority means something.
    """
    mains = main_threads(threads)
    by_job: dict[str, list[int]] = {}
    for pid, role in roles.items():
        if pid in mains:
            by_job.setdefault(role.split(":")[0], []).append(pid)
    found = []
    for job, pids in sorted(by_job.items()):
        if len(pids) < 3:
            continue
        # Compare where the main threads wait, not the whole path (the chief's differs).
        tails = {pid: signature(mains[pid])[-3:] for pid in pids}
        common, count = Counter(tails.values()).most_common(1)[0]
        if count <= len(pids) // 2:
            continue
        found += [
            (
                roles[pid],
                f"its main thread is in {' -> '.join(tails[pid])}, while {count} other "
                f"{job} process(es) are in {' -> '.join(common)}",
            )
            for pid in pids
            if tails[pid] != common
        ]
    return found
