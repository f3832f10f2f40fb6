"""Merged stacks across processes, STAT-style.

`stack_classes` groups every thread by its Python stack: in a hung data-parallel job most
replicas stand at the same place, and the process whose main thread stands elsewhere (or
is missing) is often the culprit; `outliers` names them per job. `stack_samples` turns the
loaded frames into one sample per thread, round and tool, and `merged_tree` folds the last
sample of every thread into one tree from the outermost frame.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from collectors.layout import StackSource
from postmortem.model import Frame, Stack, StackClass, StackNode, StackSample, Status, Thread

Signature = tuple[str, ...]  # function names, outermost first


def signature(thread: Thread) -> Signature:
    return tuple(f.function for f in thread.stack.root_first())


def stack_classes(threads: list[Thread]) -> list[StackClass]:
    """Classes of identical Python stacks, largest first (threads without one are left out)."""
    groups: dict[Signature, list[Thread]] = {}
    for thread in threads:
        sig = signature(thread)
        if sig:
            groups.setdefault(sig, []).append(thread)
    classes = [
        StackClass(
            members[0].stack,
            tuple((t.pid, t.tid) for t in members),
            tuple(sorted({t.pid for t in members})),
        )
        for members in groups.values()
    ]
    classes.sort(key=lambda c: (-len(c.processes), -len(c.threads), signature_of(c.stack)))
    return classes


def signature_of(stack: Stack) -> Signature:
    return tuple(f.function for f in stack.root_first())


def main_thread(threads: list[Thread]) -> Thread | None:
    """A process's main thread: py-spy's 'MainThread', else the thread whose tid is the pid."""
    for t in threads:
        if t.name == "MainThread":
            return t
    for t in threads:
        if t.tid == t.pid:
            return t
    return None


def main_threads(threads: list[Thread]) -> dict[int, Thread]:
    by_pid: dict[int, list[Thread]] = {}
    for thread in threads:
        by_pid.setdefault(thread.pid, []).append(thread)
    out: dict[int, Thread] = {}
    for pid, mine in by_pid.items():
        found = main_thread(mine)
        if found is not None and found.stack:
            out[pid] = found
    return out


def outliers(threads: list[Thread], roles: dict[int, str]) -> list[tuple[str, str]]:
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


def stack_samples(frames: pd.DataFrame) -> list[StackSample]:
    """One sample per (tool, pid, round, thread), frames innermost first; identical stacks
    share one Stack object."""
    if frames.empty:
        return []
    ordered = frames.dropna(subset=["pid", "tid"]).sort_values(
        ["source", "pid", "round", "sample", "tid", "depth"], kind="stable"
    )
    cols: dict[str, list[Any]] = {
        c: ordered[c].tolist()
        for c in (
            "source",
            "pid",
            "round",
            "sample",
            "tid",
            "thread_name",
            "function",
            "filename",
            "line",
            "code",
            "native",
        )
    }
    samples: list[StackSample] = []
    interned: dict[tuple[Any, ...], Stack] = {}
    n = len(cols["pid"])
    start = 0
    while start < n:
        key = _sample_key(cols, start)
        end = start + 1
        while end < n and _sample_key(cols, end) == key:
            end += 1
        raw = tuple(
            zip(
                cols["function"][start:end],
                cols["filename"][start:end],
                cols["line"][start:end],
                cols["code"][start:end],
                cols["native"][start:end],
                strict=True,
            )
        )
        stack = interned.get(raw)
        if stack is None:
            # A thousand replicas run the same code: each distinct stack is built once.
            stack = interned[raw] = Stack(
                tuple(
                    Frame(str(f), str(fn or ""), _int(ln), str(cd or ""), bool(nt))
                    for f, fn, ln, cd, nt in raw
                )
            )
        try:
            source = StackSource(str(key[0]))
        except ValueError:
            start = end
            continue
        samples.append(
            StackSample(
                int(key[1]),
                int(key[3]),
                str(cols["thread_name"][start] or ""),
                int(key[2]),
                source,
                stack,
                _int(key[4]),
            )
        )
        start = end
    return samples


def _sample_key(cols: dict[str, list[Any]], row: int) -> tuple[Any, ...]:
    return (
        cols["source"][row],
        cols["pid"][row],
        cols["round"][row],
        cols["tid"][row],
        cols["sample"][row],
    )


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def last_samples(samples: list[StackSample], source: StackSource) -> list[StackSample]:
    """Each thread's stack from `source` in the last round that saw it (the round's own
    dump rather than the look between rounds)."""
    latest: dict[tuple[int, int], StackSample] = {}

    def when(sample: StackSample) -> tuple[int, int]:
        return (sample.round, sample.sample == 0)

    for s in samples:
        if s.source is not source:
            continue
        key = (s.pid, s.tid)
        if key not in latest or when(s) > when(latest[key]):
            latest[key] = s
    return [latest[k] for k in sorted(latest)]


class _Node:
    __slots__ = ("children", "frame", "processes", "status", "threads")

    def __init__(self, frame: Frame | None) -> None:
        self.frame = frame
        self.children: dict[tuple[str, str, int], _Node] = {}
        self.processes: set[int] = set()
        self.threads: list[str] = []
        self.status = Status.UNKNOWN

    def freeze(self) -> StackNode:
        return StackNode(
            self.frame,
            tuple(self.threads),
            tuple(sorted(self.processes)),
            self.status,
            tuple(child.freeze() for child in self.children.values()),
        )


def merged_tree(
    samples: list[StackSample],
    labels: dict[int, str],
    statuses: dict[tuple[int, int], Status],
) -> StackNode:
    """Fold stacks from the outermost frame; a node's status is the most telling status
    (stuck before busy before parked) of the threads through it."""
    root = _Node(None)
    for s in samples:
        status = statuses.get((s.pid, s.tid), Status.UNKNOWN)
        who = f"{s.thread_name} ({labels.get(s.pid, s.pid)})"
        node = root
        node.processes.add(s.pid)
        node.threads.append(who)
        for frame in s.stack.root_first():
            key = (frame.function, frame.filename, frame.line)
            child = node.children.get(key)
            if child is None:
                child = node.children[key] = _Node(frame)
            child.processes.add(s.pid)
            child.threads.append(who)
            if status.rank < child.status.rank:
                child.status = status
            node = child
    return root.freeze()
