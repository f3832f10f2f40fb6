"""Between rounds, a light watch: does each thread wake up, and how often?

A thread blocked for good (a session.run whose peer is frozen, a lock nobody releases, a
write to a hung mount) never switches context; a worker stepping 100 times a second
sleeps and wakes in every tenth of a second. Three point samples of the stack cannot tell
the two apart; this can, with no ptrace and no pause: every `interval` seconds it reads
each Python thread's context-switch counters from /proc/PID/task/TID/status, and every
other thread's at the start and the end of the window. (The counters read with each
round's procfs include the capture's own attaches: a blocking py-spy dump adds two
voluntary switches to every thread. The watch runs between attaches, so its counts are
the job's own.)
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from collectors import procfs

INTERVAL = 0.1  # seconds between two looks: ten windows a second
# Kernel wait channels of a thread idle by design (a lock, a poll loop, a timer). Threads
# without a Python stack that wait in one of these are not looked at one by one: a TF
# process has a hundred of them, and they say nothing the others do not.
IDLE_WCHANS = (
    "futex",
    "ep_poll",
    "do_epoll",
    "do_select",
    "do_sys_poll",
    "poll_schedule",
    "hrtimer",
    "do_nanosleep",
    "pipe_read",
    "pipe_wait",
    "unix_stream",
    "sk_wait",
    "inet_csk",
    "do_sigtimedwait",
    "do_signal_stop",
    "ptrace_stop",
    "wait_woken",
)
MAX_THREADS = 64  # watched per process: its Python threads, the main thread first
# A thread the last round's blocking py-spy dump stopped is woken by the detach and goes
# back to sleep when the scheduler next runs it: on a busy machine that can be after the
# watch's first look, and that return to its wait is one voluntary switch of the capture's
# making, not the job's. For a thread seen running at its first look, one switch is taken
# off, if one comes before it is seen asleep or by its SETTLE_LOOKS-th look.
SETTLE_LOOKS = 3


@dataclass
class ThreadWatch:
    tid: int
    first: tuple[int, int] | None = None  # (voluntary, involuntary) at the first look
    last: tuple[int, int] | None = None
    looks: int = 0
    woke: int = 0  # windows (between two looks) in which it switched voluntarily
    states: Counter[str] = field(default_factory=Counter)
    discount: int = 0  # a voluntary switch of the capture's making, still to take off
    discounted: int = 0

    def look(self, switches: tuple[int, int] | None, state: str | None) -> None:
        """One look: `state` read before `switches` (a thread that falls asleep between the
        two reads is still seen running, and its switch is then taken off)."""
        if switches is None:
            return
        if self.last is None:
            self.first = switches
            self.discount = 1 if state == "R" else 0  # maybe resuming from the attach
        else:
            gained = switches[0] - self.last[0]
            if gained > 0 and self.discount:
                self.discount, self.discounted, gained = 0, self.discounted + 1, gained - 1
            if gained > 0:
                self.woke += 1
            if state != "R" or self.looks + 1 >= SETTLE_LOOKS:
                self.discount = 0  # asleep, or long running: it has settled
        self.last = switches
        self.looks += 1
        if state:
            self.states[state] += 1

    def to_json(self) -> dict[str, Any]:
        first, last = self.first or (0, 0), self.last or (0, 0)
        return {
            "tid": self.tid,
            "looks": self.looks,
            "woke": self.woke,
            "voluntary": last[0] - first[0] - self.discounted,
            "nonvoluntary": last[1] - first[1],
            "states": dict(self.states),
        }


def _thread_state(pid: int, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as handle:
            data = handle.read(512)
    except OSError:
        return None
    close = data.rfind(b")")
    return data[close + 2 : close + 3].decode() if close >= 0 else None


def watch(
    tids: dict[int, list[int]],
    seconds: float,
    stop: threading.Event,
    interval: float = INTERVAL,
    midway: Callable[[], None] | None = None,
    others: dict[int, list[int]] | None = None,
) -> dict[int, dict[str, Any]]:
    """Look at each pid's threads every `interval` s for `seconds` (or until `stop`), and
    call `midway` once half the time has passed; `others` (pid -> tids) are looked at only at
    the start and the end. Returns pid -> {started, ended, interval, threads: [...], all:
    [...]}; a process that exits is simply no longer seen."""
    others = others or {}
    watched = {
        pid: {tid: ThreadWatch(tid) for tid in wanted[:MAX_THREADS]} for pid, wanted in tids.items()
    }
    started = time.time()
    before = {pid: _switches(pid, others.get(pid, [])) for pid in tids}
    deadline = time.monotonic() + max(0.0, seconds)
    half = time.monotonic() + max(0.0, seconds) / 2
    while True:
        if midway is not None and time.monotonic() >= half:
            midway()
            midway = None
        for pid, threads in watched.items():
            for tid, record in threads.items():
                state = _thread_state(pid, tid)  # first: see ThreadWatch.look
                record.look(procfs.read_switches(pid, tid), state)
        remaining = deadline - time.monotonic()
        if remaining <= 0 or stop.wait(min(interval, remaining)):
            break
    ended = time.time()
    after = {pid: _switches(pid, others.get(pid, [])) for pid in tids}
    return {
        pid: {
            "started": started,
            "ended": ended,
            "interval": interval,
            "threads": [record.to_json() for record in threads.values()],
            # Every thread, looked at twice: voluntary and involuntary switches in between.
            "all": [
                [tid, end[0] - start[0], end[1] - start[1]]
                for tid, end in sorted(after[pid].items())
                if (start := before[pid].get(tid)) is not None
            ],
        }
        for pid, threads in watched.items()
    }


def _switches(pid: int, tids: list[int]) -> dict[int, tuple[int, int]]:
    """Context switches of the given threads of a process, now."""
    found = {}
    for tid in tids:
        switches = procfs.read_switches(pid, tid)
        if switches is not None:
            found[tid] = switches
    return found


def worth_watching(thread: dict[str, Any]) -> bool:
    """A thread from a procfs round whose wakeups could matter: in I/O, or in a kernel wait
    that is not an idle one (a filesystem's, a disk's)."""
    wchan = str(thread.get("wchan") or "")
    return thread.get("state") == "D" or not wchan.startswith(IDLE_WCHANS)
