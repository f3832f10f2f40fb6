"""Per-thread behaviour across rounds: stopped, busy, stuck or parked, and on what.

A thread is *stuck* when its Python stack is the same in every round, it used no CPU,
and its innermost frame waits on something (a session.run, a lock, a queue, a file); it
is *parked* when it waits for work (a timer, a pool queue, sleep). What it waits on is
read from the frames and from the source line it stands at (kept by the capture).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from postmortem.loading import as_int

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


@dataclass(frozen=True)
class Frame:
    function: str
    filename: str
    line: int
    code: str
    native: bool


@dataclass
class ThreadView:
    pid: int
    tid: int
    name: str
    states: str  # one kernel state letter per round seen, e.g. "SSS", "DDD"
    wchan: str
    cpu_seconds: float
    elapsed: float
    rounds: int
    same_stack: bool
    python_stack: list[Frame] = field(default_factory=list)  # last round, innermost first
    native_stack: list[Frame] = field(default_factory=list)
    active: bool = False
    process_state: str = ""
    status: str = ""  # stopped | busy | stuck | parked | unknown
    waits_on: str = ""  # session-run | session-create | lock | join | queue | io | sleep | ""
    lock_expr: str = ""  # the lock expression a lock waiter stands at

    @property
    def in_save(self) -> bool:
        if not self.python_stack and not self.native_stack:
            return False  # most threads of a TF process are native pool threads
        return any(is_save_frame(f) for f in self.python_stack) or any(
            "SaveV2" in f.function or "BundleWriter" in f.function for f in self.native_stack
        )

    @property
    def in_session_run(self) -> bool:
        if not self.python_stack:
            return False
        return any(
            f.function.endswith(SESSION_RUN_FUNCTIONS) or f.function == "BaseSession.run"
            for f in self.python_stack
        )

    @property
    def in_session_creation(self) -> bool:
        """Creating or extending the session (the first run of a graph extends it)."""
        for frame in self.python_stack:
            if frame.function.endswith(("_call_tf_sessionrun", "TF_SessionRun_wrapper")):
                return False
            if frame.function.endswith(SESSION_CREATE_FUNCTIONS):
                return True
        return False

    @property
    def innermost(self) -> Frame | None:
        return self.python_stack[0] if self.python_stack else None

    def frames_text(self, limit: int = 6) -> str:
        """Innermost frames, then the save and the caller's own frames when cut."""
        stack = self.python_stack
        if len(stack) <= limit:
            return " <- ".join(f.function for f in stack)
        keep = list(range(min(2, limit)))
        for index, frame in enumerate(stack):
            if index not in keep and (is_save_frame(frame) or not _library(frame.filename)):
                keep.append(index)
            if len(keep) >= limit:
                break
        parts = []
        for position, index in enumerate(sorted(keep)):
            if position and index != sorted(keep)[position - 1] + 1:
                parts.append("...")
            frame = stack[index]
            where = (
                f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.line})"
                if not _library(frame.filename)
                else ""
            )
            parts.append(frame.function + where)
        return " <- ".join(parts)

    @property
    def label(self) -> str:
        return f"{self.name} (tid {self.tid})"


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
    base = frame.filename.rsplit("/", 1)[-1].lower()
    if name.endswith(("saver.save", "_save")) and any(h in frame.filename for h in SAVE_FILE_HINTS):
        return True
    return "save" in name.split(".")[-1] and ("saver" in base or "checkpoint" in base)


def classify(view: ThreadView) -> None:
    """Fill status and waits_on from the evidence in the view."""
    cpu_fraction = view.cpu_seconds / view.elapsed if view.elapsed > 0 else 0.0
    inner = view.innermost
    code = inner.code if inner else ""
    lock = lock_expression(code) if code else ""
    # The standard library's own waits (Condition.wait's `waiter.acquire()`, Thread.join's
    # `lock.acquire()`) are waits for work or for a thread, not for a user's lock.
    in_stdlib_wait = inner is not None and inner.filename.endswith(STDLIB_SYNC_FILES)
    if inner is not None and inner.function.endswith(SERVING_FUNCTIONS):
        view.waits_on = "serve"  # a ps main thread serving forever is healthy
    elif view.in_session_creation:
        view.waits_on = "session-create"
    elif view.in_session_run:
        view.waits_on = "session-run"
    elif in_stdlib_wait and any(f.function.endswith(JOIN_FUNCTIONS) for f in view.python_stack[:3]):
        view.waits_on = "join"
    elif in_stdlib_wait:
        view.waits_on = "queue"
    elif lock and not SLEEP_LINE.search(code):
        view.waits_on = "lock"
        view.lock_expr = lock
    elif inner and inner.function.endswith(JOIN_FUNCTIONS):
        view.waits_on = "join"
    elif code and SLEEP_LINE.search(code):
        view.waits_on = "sleep"
    elif inner and inner.function.endswith(WAIT_FUNCTIONS):
        view.waits_on = "queue"
    if "D" in view.states:
        view.waits_on = "io" if view.waits_on in ("", "queue", "sleep") else view.waits_on

    if view.process_state in ("T", "t"):
        view.status = "stopped"
    elif cpu_fraction >= BUSY_CPU_FRACTION or (view.rounds == 1 and view.active):
        view.status = "busy"
    elif view.waits_on in ("session-run", "session-create", "lock", "join", "io"):
        view.status = "stuck" if view.same_stack else "parked"
    elif view.states and set(view.states) <= {"D"}:
        view.status = "stuck"
    else:
        view.status = "parked"


class _Stacks:
    """Frames sorted once by (pid, tid, round, depth); each thread-round is a row range.

    Frame objects are built only for the rounds asked for (the last): the others are
    compared by their (function, line) signature.
    """

    def __init__(self, frames: pd.DataFrame) -> None:
        self.ranges: dict[tuple[int, int], dict[int, tuple[int, int]]] = {}
        if frames.empty:
            self.columns: list[list[Any]] = [[] for _ in range(5)]
            return
        ordered = frames.dropna(subset=["pid", "tid"]).sort_values(
            ["pid", "tid", "round", "depth"], kind="stable"
        )
        names = ("function", "filename", "line", "code", "native")
        self.columns = [ordered[c].tolist() for c in names]
        keys = zip(
            ordered["pid"].tolist(), ordered["tid"].tolist(), ordered["round"].tolist(), strict=True
        )
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

    def frames(self, span: tuple[int, int]) -> list[Frame]:
        start, end = span
        function, filename, line, code, native = (c[start:end] for c in self.columns)
        return [
            Frame(str(f), str(fn), int(ln), str(cd or ""), bool(nt))
            for f, fn, ln, cd, nt in zip(function, filename, line, code, native, strict=True)
        ]


def thread_views(
    threads: pd.DataFrame,
    frames: pd.DataFrame,
    py_threads: pd.DataFrame,
    process_rounds: pd.DataFrame,
) -> list[ThreadView]:
    """One view per (pid, tid): each frame is sorted once and walked once, no per-thread
    pandas operations (a 1,000-process dump holds 500,000 thread rows)."""
    views: list[ThreadView] = []
    if threads.empty and frames.empty:
        return views
    pr = process_rounds[["pid", "round", "state", "time"]].to_dict("list")
    proc_state: dict[tuple[int, int], str] = {}
    times: dict[tuple[int, int], float] = {}
    for pid, rnd, state, time in zip(pr["pid"], pr["round"], pr["state"], pr["time"], strict=True):
        proc_state[(int(pid), int(rnd))] = str(state)
        times[(int(pid), int(rnd))] = float(time or 0)

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

    kernel: dict[tuple[int, int], tuple[str, float, float, str, str, int]] = {}
    if not threads.empty:
        ordered = threads.sort_values(["pid", "tid", "round"], kind="stable")
        pids = ordered["pid"].to_numpy()
        tids = ordered["tid"].to_numpy()
        starts = np.flatnonzero(np.r_[True, (pids[1:] != pids[:-1]) | (tids[1:] != tids[:-1])])
        ends = np.r_[starts[1:], len(ordered)] - 1
        state_runs = np.add.reduceat(ordered["state"].astype(str).to_numpy(dtype=object), starts)
        cpu_col = ordered["cpu_seconds"].to_numpy(dtype=float)
        rounds_col = ordered["round"].to_numpy()
        wchans = ordered["wchan"].to_numpy(dtype=object)
        knames = ordered["name"].to_numpy(dtype=object)
        for start, end, state in zip(
            starts.tolist(), ends.tolist(), state_runs.tolist(), strict=True
        ):
            pid, tid = int(pids[start]), int(tids[start])
            first_round, final_round = int(rounds_col[start]), int(rounds_col[end])
            kernel[(pid, tid)] = (
                str(state),
                float(cpu_col[end] - cpu_col[start]),
                times.get((pid, final_round), 0.0) - times.get((pid, first_round), 0.0),
                str(wchans[end] or ""),
                str(knames[end]),
                final_round,
            )

    for key in sorted(kernel.keys() | py_by_thread.keys()):
        pid, tid = key
        states, cpu, elapsed, wchan, kname, last_round = kernel.get(key, ("", 0.0, 0.0, "", "", -1))
        by_round = py_by_thread.get(key)
        python_stack: list[Frame] = []
        same = True
        rounds = len(states) or 1
        if by_round:
            signatures = {py_stacks.signature(span) for span in by_round.values()}
            same = len(signatures) == 1
            rounds = max(rounds, len(by_round))
            last_py = max(by_round)
            python_stack = py_stacks.frames(by_round[last_py])
            if last_round < 0:
                last_round = last_py
        native_stack: list[Frame] = []
        if key in native_rounds:
            span = native_stacks.ranges.get(key, {}).get(native_rounds[key])
            native_stack = native_stacks.frames(span) if span is not None else []
        view = ThreadView(
            pid=pid,
            tid=tid,
            name=names.get(key, kname) or kname,
            states=states,
            wchan=wchan,
            cpu_seconds=cpu,
            elapsed=elapsed,
            rounds=rounds,
            same_stack=same,
            python_stack=python_stack,
            native_stack=native_stack,
            active=active.get(key, False),
            process_state=proc_state.get((pid, last_round), ""),
        )
        classify(view)
        views.append(view)
    return views


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
