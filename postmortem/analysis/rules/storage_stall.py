"""The save blocks inside the filesystem: a hung NFS/HDFS/FUSE mount or a dying disk.

Evidence: a thread in uninterruptible I/O (state D) in every round, native frames in
SaveV2/BundleWriter/WritableFile, stat() or a directory listing that never returned, and
checkpoint files that do not grow. A save whose bytes keep flowing is slow, not stuck:
that is never a storage stall.
"""

from __future__ import annotations

import re

from postmortem.analysis.checkpoint import MIN_WRITE_RATE
from postmortem.analysis.facts import Facts
from postmortem.analysis.rules.common import Case, culprit, flight_evidence, thread_evidence
from postmortem.analysis.threads import NATIVE_IO_HINTS
from postmortem.model import Evidence, Finding, HangClass, Status, Thread

HANG_CLASS = HangClass.STORAGE_STALL

CHECKPOINT_PART = re.compile(r"(_temp|\.tempstate|\.data-\d+-of-\d+|\.index$)")
FS_WCHAN = (
    "fuse",
    "nfs",
    "rpc_wait",
    "request_wait_answer",
    "io_schedule",
    "wait_on_page",
    "folio_wait",
    "jbd2",
    "xfs",
    "ext4",
    "btrfs",
    "ceph",
    "cifs",
    "smb",
    "blk",
    "writeback",
)
FIX = (
    "The checkpoint directory's filesystem stopped answering. Check the mount (NFS/HDFS/FUSE "
    "server, `dmesg`, `mount`, `df`), and the storage service's health; restarting the job "
    "will not help while the mount hangs (the stuck thread cannot be killed). Save to local "
    "disk and copy asynchronously, or use a storage client with timeouts."
)


def _running(t: Thread) -> bool:
    return t.status is not Status.BUSY and t.status is not Status.STOPPED


def evaluate(facts: Facts) -> list[Finding]:
    if facts.save_is_writing:
        return []
    d_threads = [
        t
        for t in facts.threads
        if t.states and set(t.states) <= {"D"} and t.status is not Status.STOPPED
    ]
    io_native = [
        t
        for t in facts.threads
        if t.native_stack
        and t.status is not Status.BUSY
        and any(h in f.function for f in t.native_stack.frames[:12] for h in NATIVE_IO_HINTS)
        and t.in_save
    ]
    # A FUSE or NFS client can leave the writer asleep (S) in the filesystem's own wait
    # rather than in D: the kernel wait channel names the filesystem either way.
    fs_waiters = [
        t
        for t in facts.threads
        if t not in d_threads
        and _running(t)
        and t.states
        and set(t.states) <= {"S", "D"}
        and any(w in t.wchan for w in FS_WCHAN)
    ]
    timed_out = [c for c in facts.checkpoints if c.timed_out]
    stat_stuck = facts.stat_timeouts
    if not d_threads and not fs_waiters and not timed_out and not stat_stuck and not io_native:
        return []
    case = Case(HANG_CLASS)
    pid = None
    if d_threads:
        case.add(0.5)
        pid = d_threads[0].pid
        for t in d_threads[:3]:
            case.add(
                0.1 if any(w in t.wchan for w in FS_WCHAN) else 0.0,
                thread_evidence(facts, t, "in uninterruptible I/O every round"),
            )
            if t.kernel_stack:
                case.add(
                    0,
                    Evidence(
                        f"{t.label} kernel stack: {' <- '.join(t.kernel_stack[:8])}",
                        facts.sources.procfs(t.pid),
                        t.role,
                    ),
                )
    if fs_waiters:
        pid = pid or fs_waiters[0].pid
        case.add(
            0.45 if not d_threads else 0.1,
            *(
                thread_evidence(facts, t, f"waiting inside the filesystem ({t.wchan}) every round")
                for t in fs_waiters[:3]
            ),
        )
    stalled = [
        c for c in facts.checkpoints if len(c.sizes) > 1 and not (c.growing or c.temp_growing)
    ]
    if stalled and (d_threads or fs_waiters):
        case.add(
            0.1,
            Evidence(
                f"{stalled[0].dir} did not grow during the capture",
                facts.checkpoint_source(stalled[0].dir),
            ),
        )
    if io_native:
        pid = pid or io_native[0].pid
        t = io_native[0]
        case.add(
            0.15,
            Evidence(
                f"{t.label} native stack: "
                + " <- ".join(f.function for f in t.native_stack.frames[:6]),
                facts.sources.native(t.pid),
                t.role,
            ),
        )
    for progress in timed_out:
        case.add(
            0.25,
            Evidence(
                f"listing {progress.dir} did not return within the capture's "
                "time bound: the filesystem does not answer",
                facts.checkpoint_source(progress.dir),
            ),
        )
    for stuck_pid, _round in stat_stuck[:1]:
        pid = pid or stuck_pid
        case.add(
            0.1,
            Evidence(
                f"stat() of a file {facts.role(stuck_pid)} has open did not return",
                facts.sources.procfs(stuck_pid),
                facts.role(stuck_pid),
            ),
        )
    rate = facts.write_rates.get(pid, 0.0) if pid is not None else 0.0
    if rate >= MIN_WRITE_RATE and pid is not None:
        case.add(
            -0.4,
            Evidence(
                f"but {facts.role(pid)} writes {rate / 1e6:.2f} MB/s elsewhere",
                facts.sources.procfs(pid),
                facts.role(pid),
            ),
        )
    savers = [t for t in facts.threads if t.in_save and (pid is None or t.pid == pid)]
    if savers:
        case.add(0.15, thread_evidence(facts, savers[0], "inside a save"))
    if pid is None and savers:
        pid = savers[0].pid
    if pid is not None:
        case.add(0, *flight_evidence(facts, {pid}))
    role = facts.role(pid) if pid is not None else None
    open_files = _open_checkpoint_files(facts, pid)
    target = (
        open_files[0]
        if open_files
        else next(iter(facts.checkpoint_progress), "the checkpoint directory")
    )
    where = d_threads[0].label if d_threads else (savers[0].label if savers else "a thread")
    op = f"SaveV2 writing {target} on {role or 'the saver'} ({where}) blocked in the filesystem"
    summary = (
        f"The checkpoint write is stuck in the kernel: {where} on {role} waits on storage "
        f"that does not answer, and the checkpoint does not grow."
    )
    return [case.finding(summary, FIX, culprit(facts, role, "blocked writing the checkpoint"), op)]


def _open_checkpoint_files(facts: Facts, pid: int | None) -> list[str]:
    if pid is None:
        return []
    dirs = tuple(facts.checkpoint_progress)
    hits = [
        p
        for p in facts.open_files(pid)
        if (dirs and p.startswith(dirs)) or CHECKPOINT_PART.search(p)
    ]
    # Checkpoint parts being written first, then anything else open in the directory.
    return sorted(hits, key=lambda p: (not CHECKPOINT_PART.search(p), p))
