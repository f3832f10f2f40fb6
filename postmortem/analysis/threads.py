"""Per-thread behaviour across rounds: stopped, busy, stuck or parked, and on what.

A thread is *stuck* when its Python stack is the same in every round, it used no CPU,
and its innermost frame waits on something (a session.run, a lock, a queue, a file); it
is *parked* when it waits for work (a timer, a pool queue, sleep). What it waits on is
read from the frames and from the source line it stands at (kept by the capture).
`thread_views` builds the model's `Thread` records; the predicates below read them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

import numpy as np
import pandas as pd

from collectors.watch import IDLE_WCHANS
from postmortem.loading import as_int
from postmortem.model import Frame, Stack, Status, Thread, ThreadGroup, WaitKind, thread_family

BUSY_CPU_FRACTION = 0.05  # of one core, over the capture
SESSION_RUN_FUNCTIONS = ("_call_tf_sessionrun", "TF_SessionRun_wrapper", "_run_fn", "_do_call")
SESSION_CREATE_FUNCTIONS = (
    "_extend_graph",
    "TF_ExtendGraph",
    "_create_session",
    "create_session",
    "prepare_session",
    "_try_run_local_init_op",
)
LOCK_LINE = re.compile(
    r"^\s*(?:async\s+)?with\s+(?P<with>[^:]+?)\s*:|(?P<acq>[\w.\[\]()]+)\.acquire\("
)
SLEEP_LINE = re.compile(r"\bsleep\(")
WAIT_FUNCTIONS = ("Condition.wait", "Event.wait", "wait", "Queue.get", "get")
JOIN_FUNCTIONS = ("Thread.join", "_wait_for_tstate_lock", "join", "Coordinator.join")
SERVING_FUNCTIONS = ("Server.join", "server.join")
STDLIB_SYNC_FILES = ("/threading.py", "/queue.py", "/multiprocessing/synchronize.py")
SAVE_FILE_HINTS = ("saver.py", "checkpoint", "basic_session_run_hooks.py", "supervisor.py")
# Keras saves (tf_keras, keras 3): Model.save, save_weights, save_model.
KERAS_SAVE_FUNCTIONS = ("save_weights", "save_model", "Model.save", "model.save")
# The Python side of a TF2 collective: the op wrappers, and the strategy code that calls
# them (MultiWorkerMirroredStrategy runs eager all-reduces from a thread pool, the caller
# waiting in Pool.map).
COLLECTIVE_FILES = (
    "/collective_ops.py",
    "/gen_collective_ops.py",
    "/cross_device_ops.py",
    "/cross_device_utils.py",
)
COLLECTIVE_FUNCTIONS = ("all_reduce", "all_gather", "batch_all_reduce", "collective_")
# TF2 runs ops eagerly (generated op wrappers call TFE_Py_FastPathExecute) and tf.functions
# through execute.quick_execute: a thread inside one waits on the runtime, as session.run.
EAGER_EXECUTE_FUNCTIONS = ("quick_execute", "TFE_Py_FastPathExecute", "TFE_Py_Execute")
NATIVE_IO_HINTS = (
    "WritableFile",
    "BundleWriter",
    "SaveV2",
    "::Append",
    "::Flush",
    "::Sync",
    "fsync",
    "__libc_write",
    "write",
    "pwrite",
)


def _names(thread: Thread) -> list[str]:
    return [f.function for f in thread.stack]


def in_save(stack: Stack, native: Stack) -> bool:
    if not stack and not native:
        return False  # most threads of a TF process are native pool threads
    return any(is_save_frame(f) for f in stack) or any(
        "SaveV2" in f.function or "BundleWriter" in f.function for f in native
    )


def is_collective_frame(frame: Frame) -> bool:
    if not frame.filename.endswith(COLLECTIVE_FILES):
        return False
    name = frame.function.rsplit(".", 1)[-1].lower()
    return any(part in name for part in COLLECTIVE_FUNCTIONS)


def in_collective(stack: Stack) -> bool:
    """Inside a TF2 collective: an all-reduce or all-gather that every member must join."""
    return any(is_collective_frame(f) for f in stack)


def in_tf_op(stack: Stack) -> bool:
    """The innermost Python frame is an eager op wrapper (gen_*_ops.py) or tf.function's
    execute: the thread waits in the TensorFlow runtime."""
    if any(f.native and f.function.endswith(EAGER_EXECUTE_FUNCTIONS) for f in stack.frames[:8]):
        return True
    inner = next((f for f in stack.frames if not f.native), None)  # with --native: skip C
    if inner is None:
        return False
    base = inner.short_file
    if base.startswith("gen_") and base.endswith("_ops.py"):
        return True
    return inner.function.endswith(EAGER_EXECUTE_FUNCTIONS)


def in_session_run(stack: Stack) -> bool:
    return any(
        f.function.endswith(SESSION_RUN_FUNCTIONS) or f.function == "BaseSession.run" for f in stack
    )


def in_session_creation(stack: Stack) -> bool:
    """Creating or extending the session (the first run of a graph extends it)."""
    for frame in stack:
        if frame.function.endswith(("_call_tf_sessionrun", "TF_SessionRun_wrapper")):
            return False
        if frame.function.endswith(SESSION_CREATE_FUNCTIONS):
            return True
    return False


def frames_text(stack: Stack, limit: int = 6) -> str:
    """Innermost frames, then the save and the caller's own frames when cut."""
    frames = stack.frames
    if len(frames) <= limit:
        return " <- ".join(f.function for f in frames)
    keep = list(range(min(2, limit)))
    for index, frame in enumerate(frames):
        if index not in keep and (is_save_frame(frame) or not _library(frame.filename)):
            keep.append(index)
        if len(keep) >= limit:
            break
    parts = []
    ordered = sorted(keep)
    for position, index in enumerate(ordered):
        if position and index != ordered[position - 1] + 1:
            parts.append("...")
        frame = frames[index]
        where = f" ({frame.short_file}:{frame.line})" if not _library(frame.filename) else ""
        parts.append(frame.function + where)
    return " <- ".join(parts)


LOCKLIKE = re.compile(r"lock|mutex|cond|sem|latch|guard", re.IGNORECASE)


def lock_expression(code: str) -> str:
    """The lock a `with X:` / `X.acquire()` line names, or '' if the line takes none."""
    match = LOCK_LINE.search(code)
    if not match:
        return ""
    expr = (match.group("with") or match.group("acq") or "").strip()
    expr = re.split(r"\s+as\s+", expr)[0].strip()
    if "(" in expr and not LOCKLIKE.search(expr):
        return ""  # with open(...), with tf.Graph().as_default(): not locks
    return expr


def is_save_frame(frame: Frame) -> bool:
    name = frame.function.lower()
    base = frame.short_file.lower()
    if name.endswith(("saver.save", "_save")) and any(h in frame.filename for h in SAVE_FILE_HINTS):
        return True
    if "keras" in frame.filename and frame.function.endswith(KERAS_SAVE_FUNCTIONS):
        return True
    return "save" in name.split(".")[-1] and ("saver" in base or "checkpoint" in base)


@dataclass(frozen=True)
class Observed:
    """What the dump shows of one thread, before it is judged."""

    states: str
    wchan: str
    cpu_seconds: float
    elapsed: float
    rounds: int
    same_stack: bool
    stack: Stack
    native_stack: Stack
    active: bool
    process_state: str
    samples: int = 1
    wakeups: int | None = None
    watched_s: float = 0.0


def wait_kind(observed: Observed) -> tuple[WaitKind, str]:
    """What the thread waits on, and the lock expression when it waits for a lock."""
    stack = observed.stack
    inner = stack.innermost
    code = inner.code if inner else ""
    lock = lock_expression(code) if code else ""
    # The standard library's own waits (Condition.wait's `waiter.acquire()`, Thread.join's
    # `lock.acquire()`) are waits for work or for a thread, not for a user's lock.
    in_stdlib_wait = inner is not None and inner.filename.endswith(STDLIB_SYNC_FILES)
    kind, expr = WaitKind.NONE, ""
    if inner is not None and inner.function.endswith(SERVING_FUNCTIONS):
        kind = WaitKind.SERVE  # a ps main thread serving forever is healthy
    elif in_session_creation(stack):
        kind = WaitKind.SESSION_CREATE
    elif in_session_run(stack):
        kind = WaitKind.SESSION_RUN
    elif in_collective(stack):
        kind = WaitKind.COLLECTIVE
    elif in_tf_op(stack):
        kind = WaitKind.TF_OP
    elif in_stdlib_wait and any(f.function.endswith(JOIN_FUNCTIONS) for f in stack.frames[:3]):
        kind = WaitKind.JOIN
    elif in_stdlib_wait:
        kind = WaitKind.QUEUE
    elif lock and not SLEEP_LINE.search(code):
        kind, expr = WaitKind.LOCK, lock
    elif inner and inner.function.endswith(JOIN_FUNCTIONS):
        kind = WaitKind.JOIN
    elif code and SLEEP_LINE.search(code):
        kind = WaitKind.SLEEP
    elif inner and inner.function.endswith(WAIT_FUNCTIONS):
        kind = WaitKind.QUEUE
    if "D" in observed.states and kind in (WaitKind.NONE, WaitKind.QUEUE, WaitKind.SLEEP):
        kind = WaitKind.IO
    return kind, expr


BLOCKING_WAITS = (
    WaitKind.SESSION_RUN,
    WaitKind.COLLECTIVE,
    WaitKind.TF_OP,
    WaitKind.SESSION_CREATE,
    WaitKind.LOCK,
    WaitKind.JOIN,
    WaitKind.IO,
)


MIN_WATCH_S = 0.3  # less watching than this says nothing about wakeups
# Wakeups per second a wait may show and still be stuck: polls that find nothing (the
# session-creation loop logs every 10 s, Coordinator.join looks every second). Any other
# blocking wait that wakes has returned: session.run finished a step, a lock was released.
TIMER_WAKEUPS = {WaitKind.SESSION_CREATE: 1.0, WaitKind.JOIN: 1.5}


def status_of(observed: Observed, waits_on: WaitKind) -> tuple[Status, str]:
    o = observed
    return judge(
        o.states,
        o.cpu_seconds,
        o.elapsed,
        o.process_state,
        waits_on,
        o.same_stack,
        o.samples,
        o.wakeups,
        o.watched_s,
        o.active and o.rounds == 1,
    )


def judge(
    states: str,
    cpu: float,
    elapsed: float,
    process_state: str,
    waits_on: WaitKind,
    same_stack: bool,
    samples: int,
    wakeups: int | None,
    watched_s: float,
    active_once: bool,
) -> tuple[Status, str]:
    """A thread's status, and the evidence it rests on in words.

    Stuck needs positive evidence of no progress: a blocking wait, the same stack in every
    sample, and no wakeup (beyond a poll's) in the time the capture watched it. A dump
    without wakeup counts (schema 1) falls back to the same stack and no CPU.
    """
    if process_state in ("T", "t"):
        return Status.STOPPED, "its process is stopped (state T)"
    if elapsed > 0 and cpu / elapsed >= BUSY_CPU_FRACTION:
        return Status.BUSY, f"{cpu:.2f}s of CPU in {elapsed:.1f}s"
    if active_once:
        return Status.BUSY, "py-spy saw it running"
    watched = wakeups is not None and watched_s >= MIN_WATCH_S
    blocking = waits_on in BLOCKING_WAITS or bool(states and set(states) <= {"D"})
    where = f"the same stack in all {samples} samples" if samples > 1 else "one stack sample"
    if blocking and watched:
        assert wakeups is not None
        rate = wakeups / watched_s
        if rate > TIMER_WAKEUPS.get(waits_on, 0.0):
            return (
                Status.ACTIVE,
                f"woke {wakeups} times in {watched_s:.1f}s watched ({rate:.0f}/s): it keeps "
                "returning from its wait",
            )
        if not same_stack:
            return Status.PARKED, "its stack changed between samples"
        woke = "no wakeup" if wakeups == 0 else f"only {wakeups} poll wakeup(s)"
        return Status.STUCK, f"{where}, {woke} in {watched_s:.1f}s watched"
    if blocking:
        if same_stack:
            return Status.STUCK, f"{where} and no CPU (this dump has no wakeup counts)"
        return Status.PARKED, "its stack changed between samples"
    if watched and wakeups:
        return Status.PARKED, f"waits for work; woke {wakeups} times in {watched_s:.1f}s"
    return Status.PARKED, "waits for work"


class _Stacks:
    """Frames sorted once by (pid, tid, moment, depth); each thread-moment is a row range.

    Frame objects are built only for the rounds asked for (the last): the others are
    compared by their (function, line) signature.
    """

    def __init__(self, frames: pd.DataFrame) -> None:
        self.ranges: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}
        if frames.empty:
            self.columns: list[list[Any]] = [[] for _ in range(5)]
            return
        ordered = frames.dropna(subset=["pid", "tid"]).sort_values(
            ["pid", "tid", "round", "sample", "depth"], kind="stable"
        )
        names = ("function", "filename", "line", "code", "native")
        self.columns = [ordered[c].tolist() for c in names]
        # A moment: the round's own dump is 2 x round, the watch's look after it 2 x round + 1.
        moments = (ordered["round"] * 2 + ordered["sample"].fillna(0).astype(int)).tolist()
        keys = zip(ordered["pid"].tolist(), ordered["tid"].tolist(), moments, strict=True)
        previous = None
        start = 0
        for index, key in enumerate(keys):
            if key != previous:
                if previous is not None:
                    self._add(previous, start, index)
                previous, start = key, index
        if previous is not None:
            self._add(previous, start, len(self.columns[0]))

    def _add(self, key: tuple[Any, Any, Any], start: int, end: int) -> None:
        pid, tid, rnd = key
        self.ranges.setdefault((int(pid), int(tid)), {})[int(rnd)] = (start, end)

    def signature(self, span: tuple[int, int]) -> tuple[tuple[Any, Any], ...]:
        start, end = span
        return tuple(zip(self.columns[0][start:end], self.columns[2][start:end], strict=True))

    def stack(self, span: tuple[int, int]) -> Stack:
        start, end = span
        function, filename, line, code, native = (c[start:end] for c in self.columns)
        return Stack(
            tuple(
                Frame(str(f), str(fn), int(ln), str(cd or ""), bool(nt))
                for f, fn, ln, cd, nt in zip(function, filename, line, code, native, strict=True)
            )
        )


def thread_views(
    threads: pd.DataFrame,
    frames: pd.DataFrame,
    py_threads: pd.DataFrame,
    process_rounds: pd.DataFrame,
    roles: dict[int, str] | None = None,
    watch: pd.DataFrame | None = None,
) -> ThreadViews:
    """One Thread per (pid, tid): each frame is sorted once and walked once, no per-thread
    pandas operations (a 1,000-process dump holds 500,000 thread rows)."""
    roles = roles or {}
    views: list[Thread] = []
    if threads.empty and frames.empty:
        return ThreadViews(views, [])
    wakes = _wakes(watch)
    pr = process_rounds[["pid", "round", "state", "time"]].to_dict("list")
    proc_state: dict[tuple[int, int], str] = {}
    times: dict[tuple[int, int], float] = {}
    for pid, rnd, state, time in zip(pr["pid"], pr["round"], pr["state"], pr["time"], strict=True):
        proc_state[(int(pid), int(rnd))] = str(state)
        times[(int(pid), int(rnd))] = _seconds(time)

    is_py = frames["source"] == "pyspy" if not frames.empty else None
    py_stacks = _Stacks(frames[is_py] if is_py is not None else frames)
    native_stacks = _Stacks(
        frames[~is_py & frames["native"].astype(bool)] if is_py is not None else frames
    )
    py_by_thread = py_stacks.ranges
    native_rounds: dict[tuple[int, int], int] = {}
    if is_py is not None and (~is_py).any():
        # The last round with native frames at all (a round of only Python frames counts).
        last = frames[~is_py].dropna(subset=["pid", "tid"]).groupby(["pid", "tid"])["round"]
        native_rounds = {
            (as_int(key[0]), as_int(key[1])): as_int(r)
            for key, r in cast("dict[tuple[Any, Any], Any]", last.max().to_dict()).items()
        }

    active: dict[tuple[int, int], bool] = {}
    names: dict[tuple[int, int], str] = {}
    if not py_threads.empty:
        pt = py_threads[["pid", "tid", "thread_name", "active"]].to_dict("list")
        for pid, tid, name, is_active in zip(
            pt["pid"], pt["tid"], pt["thread_name"], pt["active"], strict=True
        ):
            key = (int(pid), int(tid))
            active[key] = active.get(key, False) or bool(is_active)
            names[key] = str(name)

    kernel: dict[tuple[int, int], _Kernel] = {}
    groups: dict[tuple[int, str, Status, str, tuple[int, ...]], list[int]] = {}
    group_wchan: dict[tuple[int, str, Status, str, tuple[int, ...]], str] = {}
    if not threads.empty:
        ordered = threads.sort_values(["pid", "tid", "round"], kind="stable")
        pids = ordered["pid"].to_numpy()
        tids = ordered["tid"].to_numpy()
        starts = np.flatnonzero(np.r_[True, (pids[1:] != pids[:-1]) | (tids[1:] != tids[:-1])])
        ends = np.r_[starts[1:], len(ordered)]
        state_runs = np.add.reduceat(ordered["state"].astype(str).to_numpy(dtype=object), starts)
        cpu_col = ordered["cpu_seconds"].to_numpy(dtype=float)
        rounds_col = ordered["round"].tolist()
        wchans = ordered["wchan"].to_numpy(dtype=object)
        knames = ordered["name"].to_numpy(dtype=object)
        kstacks = ordered["kernel_stack"].to_numpy(dtype=object)
        seen_rounds: dict[tuple[int, ...], tuple[int, ...]] = {}
        families: dict[str, str] = {}
        lasts = ends - 1
        # Each thread's values taken at once (a million threads at 10,000 processes).
        for start, end, states, pid, tid, cpu in zip(
            starts.tolist(),
            ends.tolist(),
            state_runs.tolist(),
            list(map(int, pids[starts].tolist())),
            list(map(int, tids[starts].tolist())),
            (cpu_col[lasts] - cpu_col[starts]).tolist(),
            strict=True,
        ):
            first_round, final_round = int(rounds_col[start]), int(rounds_col[end - 1])
            read_in = tuple(rounds_col[start:end])
            read_in = seen_rounds.setdefault(read_in, read_in)
            elapsed = times.get((pid, final_round), 0.0) - times.get((pid, first_round), 0.0)
            key = (pid, tid)
            if key not in py_by_thread and key not in native_rounds:
                states = str(states)
                if "D" not in states:
                    # The common case, judged as `judge` would without building a record:
                    # a thread never in D waits on nothing that blocks, so its process
                    # stopped makes it stopped, CPU makes it busy, anything else parked.
                    stopped = proc_state.get((pid, final_round), "") in ("T", "t")
                    wchan = str(wchans[end - 1] or "")
                    if (
                        stopped or not (elapsed > 0 and cpu / elapsed >= BUSY_CPU_FRACTION)
                    ) and wchan.startswith(IDLE_WCHANS):
                        status = Status.STOPPED if stopped else Status.PARKED
                        name = str(knames[end - 1])
                        family = families.get(name)
                        if family is None:
                            family = families[name] = thread_family(name)
                        gkey = (pid, family, status, states, read_in)
                        tids_of = groups.get(gkey)
                        if tids_of is None:
                            groups[gkey] = [tid]
                            group_wchan[gkey] = wchan
                        else:
                            tids_of.append(tid)
                        continue
                # Most threads of a TF process are native pool threads with no stack at
                # all: judged from the kernel's view alone; the parked and stopped ones in
                # an idle kernel wait, alike in all the capture shows, become groups.
                k = _Kernel(
                    str(states),
                    read_in,
                    cpu,
                    elapsed,
                    str(wchans[end - 1] or ""),
                    str(knames[end - 1]),
                    final_round,
                    _kernel_stack(kstacks[start:end]) if "D" in str(states) else (),
                )
                status, record = _stackless(
                    pid,
                    tid,
                    k.name,
                    roles.get(pid, f"pid:{pid}"),
                    k,
                    proc_state.get((pid, final_round), ""),
                    wakes.get(key),
                )
                if record is not None:
                    views.append(record)
                    continue
                gkey = (pid, thread_family(k.name), status, k.states, read_in)
                groups.setdefault(gkey, []).append(tid)
                group_wchan.setdefault(gkey, k.wchan)
                continue
            kernel[key] = _Kernel(
                str(states),
                read_in,
                cpu,
                elapsed,
                str(wchans[end - 1] or ""),
                str(knames[end - 1]),
                final_round,
                # The capture keeps kernel stacks of threads in D only.
                _kernel_stack(kstacks[start:end]) if "D" in str(states) else (),
            )
    thread_groups = [
        ThreadGroup(
            pid,
            roles.get(pid, f"pid:{pid}"),
            fam,
            status,
            tuple(tids),
            group_wchan[g],
            states,
            rounds,
        )
        for g, tids in groups.items()
        for pid, fam, status, states, rounds in (g,)
    ]

    interned: dict[Stack, Stack] = {}
    for key in sorted(kernel.keys() | py_by_thread.keys()):
        pid, tid = key
        k = kernel.get(key) or _NO_KERNEL
        by_round = py_by_thread.get(key)
        stack = Stack()
        same = True
        rounds = len(k.states) or 1
        last_round = k.last_round
        if by_round:
            signatures = {py_stacks.signature(span) for span in by_round.values()}
            same = len(signatures) == 1
            own = [m for m in by_round if m % 2 == 0] or list(by_round)
            rounds = max(rounds, len(own))
            last_py = max(own)  # the last round's own (consistent) dump
            fresh = py_stacks.stack(by_round[last_py])
            stack = interned.setdefault(fresh, fresh)
            if last_round < 0:
                last_round = last_py // 2
        native = Stack()
        if key in native_rounds:
            span = native_stacks.ranges.get(key, {}).get(native_rounds[key])
            if span is not None:
                fresh = native_stacks.stack(span)
                native = interned.setdefault(fresh, fresh)
        name = names.get(key, k.name) or k.name
        role = roles.get(pid, f"pid:{pid}")
        process_state = proc_state.get((pid, last_round), "")
        woke = wakes.get(key)
        if not stack and not native:
            _status, record = _stackless(pid, tid, name, role, k, process_state, woke, False)
            if record is not None:
                views.append(record)
            continue
        observed = Observed(
            states=k.states,
            wchan=k.wchan,
            cpu_seconds=k.cpu,
            elapsed=k.elapsed,
            rounds=rounds,
            same_stack=same,
            stack=stack,
            native_stack=native,
            active=active.get(key, False),
            process_state=process_state,
            samples=len(by_round) if by_round else 0,
            wakeups=woke.wakeups if woke else None,
            watched_s=woke.seconds if woke else 0.0,
        )
        waits_on, lock = wait_kind(observed)
        status, why = status_of(observed, waits_on)
        views.append(
            Thread(
                pid=pid,
                tid=tid,
                name=name,
                role=role,
                status=status,
                waits_on=waits_on,
                states=k.states,
                wchan=k.wchan,
                cpu_seconds=k.cpu,
                elapsed_s=k.elapsed,
                python=key in py_by_thread,
                stack=stack,
                native_stack=native,
                lock_expr=lock,
                in_save=in_save(stack, native),
                same_stack=same,
                kernel_stack=k.kernel_stack,
                state_rounds=k.rounds,
                watched_s=woke.seconds if woke else 0.0,
                wakeups=woke.wakeups if woke else None,
                wakeups_by_round=woke.by_round if woke else (),
                samples=observed.samples,
                decided_by=why,
            )
        )
    return ThreadViews(views, thread_groups)


def _stackless(
    pid: int,
    tid: int,
    name: str,
    role: str,
    k: _Kernel,
    process_state: str,
    woke: _Wakes | None,
    group_idle: bool = True,
) -> tuple[Status, Thread | None]:
    """A thread with no stack, judged from the kernel's view: it waits on nothing we can
    name, or on I/O. Returns its status, and the record when it deserves one of its own
    (not a parked or stopped thread in an idle kernel wait: those are grouped)."""
    waits_on = WaitKind.IO if "D" in k.states else WaitKind.NONE
    status, why = judge(
        k.states,
        k.cpu,
        k.elapsed,
        process_state,
        waits_on,
        True,
        0,
        woke.wakeups if woke else None,
        woke.seconds if woke else 0.0,
        False,
    )
    if group_idle and status in (Status.PARKED, Status.STOPPED) and k.wchan.startswith(IDLE_WCHANS):
        return status, None
    return status, Thread(
        pid,
        tid,
        name,
        role,
        status,
        waits_on,
        k.states,
        k.wchan,
        k.cpu,
        k.elapsed,
        False,
        _NO_STACK,
        _NO_STACK,
        kernel_stack=k.kernel_stack,
        state_rounds=k.rounds,
        watched_s=woke.seconds if woke else 0.0,
        wakeups=woke.wakeups if woke else None,
        wakeups_by_round=woke.by_round if woke else (),
        decided_by=why,
    )


class _Wakes(NamedTuple):
    seconds: float
    wakeups: int
    by_round: tuple[tuple[int, int], ...]


def _wakes(watch: pd.DataFrame | None) -> dict[tuple[int, int], _Wakes]:
    """(pid, tid) -> what the watches between rounds saw of it, summed over rounds."""
    if watch is None or watch.empty:
        return {}
    cols = watch[["pid", "tid", "round", "voluntary", "started", "ended"]].to_dict("list")
    out: dict[tuple[int, int], list[tuple[int, int, float]]] = {}
    for pid, tid, rnd, voluntary, started, ended in zip(*cols.values(), strict=True):
        if voluntary is None or started is None or ended is None or voluntary != voluntary:
            continue
        out.setdefault((int(pid), int(tid)), []).append(
            (int(rnd), int(voluntary), max(0.0, float(ended) - float(started)))
        )
    return {
        key: _Wakes(
            sum(s for _, _, s in rows),
            sum(v for _, v, _ in rows),
            tuple(sorted((r, v) for r, v, _ in rows)),
        )
        for key, rows in out.items()
    }


_NO_STACK = Stack()


class ThreadViews(NamedTuple):
    threads: list[Thread]  # every thread with a stack, and every stuck or busy one
    groups: list[ThreadGroup]  # the other threads, alike ones together


class _Kernel(NamedTuple):
    states: str
    rounds: tuple[int, ...]
    cpu: float
    elapsed: float
    wchan: str
    name: str
    last_round: int
    kernel_stack: tuple[str, ...]


_NO_KERNEL = _Kernel("", (), 0.0, 0.0, "", "", -1, ())


def _seconds(value: Any) -> float:
    try:
        number = float(value or 0)
    except (TypeError, ValueError):
        return 0.0
    return number if number == number else 0.0  # NaN -> 0


def _kernel_stack(values: Any) -> tuple[str, ...]:
    """The last kernel stack captured (root-only in /proc), shortened to function names:
    "[<0>] fuse_perform_write+0x1a/0x60" -> "fuse_perform_write"."""
    stacks = [str(v) for v in values if isinstance(v, str) and v]
    if not stacks:
        return ()
    return tuple(f.split("] ", 1)[-1].split("+", 1)[0] for f in stacks[-1].split(" <- "))


def enclosing_with_locks(sources: dict[str, dict[str, str]], frame: Frame) -> list[str]:
    """Lock expressions of the `with` blocks that enclose a frame's current line.

    Walks up from the current line: every `with X:` with less indentation than the lines
    below it (and still open) encloses the line, so the thread holds X.
    """
    lines = sources.get(frame.filename, {})
    if not lines:
        return []
    current = lines.get(str(frame.line), "")
    indent = len(current) - len(current.lstrip())
    held = []
    for number in range(frame.line - 1, max(0, frame.line - 200), -1):
        text = lines.get(str(number))
        if text is None:
            break
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        this_indent = len(text) - len(text.lstrip())
        if this_indent < indent:
            expr = lock_expression(text) if stripped.startswith(("with ", "async with ")) else ""
            if expr:
                held.append(expr)
            if stripped.startswith(("def ", "async def ", "class ")):
                break
            indent = this_indent
    return held


def _library(filename: str) -> bool:
    """Frames of installed packages and the standard library, as opposed to the job's code."""
    return (
        "site-packages/" in filename
        or "dist-packages/" in filename
        or ("/lib/python3" in filename and "site-packages" not in filename)
    )
