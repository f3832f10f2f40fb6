"""The save blocks inside the filesystem: a hung NFS/HDFS/FUSE mount or a dying disk.

Evidence: a thread in uninterruptible I/O (state D) in every round, native frames in
SaveV2/BundleWriter/WritableFile, stat() or a directory listing that never returned, and
checkpoint files that do not grow.
"""

from __future__ import annotations

import re

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Evidence, Finding, HangClass
from postmortem.analysis.rules.common import MIN_WRITE_RATE, culprit, thread_evidence
from postmortem.analysis.threads import NATIVE_IO_HINTS
from postmortem.loading import records

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


def evaluate(facts: Facts) -> list[Finding]:
    d_threads = [
        t
        for t in facts.threads
        if t.states and set(t.states) <= {"D"} and t.process_state not in ("T", "t")
    ]
    io_native = [
        t
        for t in facts.threads
        if t.status != "busy"
        and any(h in f.function for f in t.native_stack[:12] for h in NATIVE_IO_HINTS)
        and t.in_save
    ]
    # A FUSE or NFS client can leave the writer asleep (S) in the filesystem's own wait
    # rather than in D: the kernel wait channel names the filesystem either way.
    fs_waiters = [
        t
        for t in facts.threads
        if t not in d_threads
        and t.status != "busy"
        and t.process_state not in ("T", "t")
        and t.states
        and set(t.states) <= {"S", "D"}
        and any(w in t.wchan for w in FS_WCHAN)
    ]
    timed_out = {d: p for d, p in facts.checkpoint_progress.items() if p["timed_out"]}
    stat_stuck = facts.dump.process_rounds
    stat_stuck = stat_stuck[stat_stuck["stat_timeout"]] if not stat_stuck.empty else stat_stuck
    if not d_threads and not fs_waiters and not timed_out and stat_stuck.empty and not io_native:
        return []
    growing = [d for d, p in facts.checkpoint_progress.items() if p["growing"] or p["temp_growing"]]
    evidence: list[Evidence] = []
    score = 0.0
    pid = None
    if d_threads:
        score += 0.5
        pid = d_threads[0].pid
        for t in d_threads[:3]:
            fs = any(w in t.wchan for w in FS_WCHAN)
            score += 0.1 if fs else 0.0
            evidence.append(thread_evidence(facts, t, "in uninterruptible I/O every round"))
            kernel = _kernel_stack(facts, t.pid, t.tid)
            if kernel:
                evidence.append(
                    Evidence(
                        f"{t.label} kernel stack: {kernel}",
                        f"processes/{t.pid}/round-*/procfs.json",
                        facts.role(t.pid),
                    )
                )
    if fs_waiters:
        score += 0.45 if not d_threads else 0.1
        pid = pid or fs_waiters[0].pid
        evidence += [
            thread_evidence(facts, t, f"waiting inside the filesystem ({t.wchan}) every round")
            for t in fs_waiters[:3]
        ]
    stalled = [
        d
        for d, p in facts.checkpoint_progress.items()
        if isinstance(p["sizes"], list)
        and len(p["sizes"]) > 1
        and not (p["growing"] or p["temp_growing"])
    ]
    if stalled and (d_threads or fs_waiters):
        score += 0.1
        evidence.append(
            Evidence(f"{stalled[0]} did not grow during the capture", "checkpoint/*/round-*.json")
        )
    if io_native:
        score += 0.15
        pid = pid or io_native[0].pid
        t = io_native[0]
        evidence.append(
            Evidence(
                f"{t.label} native stack: " + " <- ".join(f.function for f in t.native_stack[:6]),
                f"processes/{t.pid}/round-*/native.*.txt",
                facts.role(t.pid),
            )
        )
    for directory in timed_out:
        score += 0.25
        evidence.append(
            Evidence(
                f"listing {directory} did not return within the capture's "
                "time bound: the filesystem does not answer",
                "checkpoint/*/round-*.json",
            )
        )
    for row in records(stat_stuck):
        score += 0.1
        pid = pid or int(row["pid"])
        evidence.append(
            Evidence(
                f"stat() of a file {facts.role(int(row['pid']))} has open did not return",
                f"processes/{row['pid']}/round-{int(row['round']):03d}/procfs.json",
                facts.role(int(row["pid"])),
            )
        )
        break
    rate = facts.write_rates.get(pid, 0.0) if pid is not None else 0.0
    if rate >= MIN_WRITE_RATE:
        score -= 0.4
        evidence.append(
            Evidence(
                f"but {facts.role(pid)} writes {rate / 1e6:.2f} MB/s: slow, not stuck",
                f"processes/{pid}/round-*/procfs.json",
                facts.role(pid),
            )
        )
    if growing:
        score -= 0.4
        evidence.append(Evidence(f"but {growing[0]} grew during the capture", "checkpoint/"))
    savers = [t for t in facts.threads if t.in_save and (pid is None or t.pid == pid)]
    if savers:
        score += 0.15
        evidence.append(thread_evidence(facts, savers[0], "inside a save"))
    if pid is None and savers:
        pid = savers[0].pid
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
    return [
        Finding(
            HangClass.STORAGE_STALL,
            max(0.05, min(score, 0.95)),
            summary,
            FIX,
            culprit(facts, role, "blocked writing the checkpoint"),
            op,
            tuple(evidence),
        )
    ]


def _open_checkpoint_files(facts: Facts, pid: int | None) -> list[str]:
    files = facts.dump.files
    if pid is None or files.empty:
        return []
    mine = files[files["pid"] == pid]
    dirs = tuple(facts.checkpoint_progress)
    hits = [
        str(p)
        for p in mine["path"].unique()
        if (dirs and str(p).startswith(dirs)) or CHECKPOINT_PART.search(str(p))
    ]
    # Checkpoint parts being written first, then anything else open in the directory.
    return sorted(hits, key=lambda p: (not CHECKPOINT_PART.search(p), p))


def _kernel_stack(facts: Facts, pid: int, tid: int) -> str:
    """The last kernel stack captured for a thread in D (root-only in /proc), shortened."""
    threads = facts.dump.threads
    mine = threads[(threads["pid"] == pid) & (threads["tid"] == tid)]
    stacks = [str(s) for s in mine.sort_values("round")["kernel_stack"] if s and str(s) != "nan"]
    if not stacks:
        return ""
    # "[<0>] fuse_perform_write+0x1a/0x60" -> "fuse_perform_write"
    frames = [f.split("] ", 1)[-1].split("+", 1)[0] for f in stacks[-1].split(" <- ")]
    return " <- ".join(frames[:8])
