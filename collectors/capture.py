"""The capture loop: N rounds over every target in parallel, written into a dump.

Harmless by construction: procfs reads need no attach; py-spy pauses a running target
for one dump at most and never touches a stopped one (--nonblocking); a target that was
stopped is stopped again if any attach let it run; every call is bounded in time; and
nothing is written anywhere but the output directory.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from collectors import checkpoint, flight, layout, logs, procfs, tf_profiler, watch
from collectors.base import CollectorFailure, ProcessCollector, Target
from collectors.dump import DumpWriter, Outcome, OutputPlan, RoundInfo, unwritable
from collectors.layout import CollectorStatus, FailureKind
from collectors.stacks import NativeAllThreadsCollector, PySpyCollector
from collectors.tools import (
    BoundedCallTimeout,
    call_bounded,
    find_tool,
    reset_stop,
    stop_all,
)
from postmortem.errors import (
    ExitCode,
    NoSuchProcessError,
    NotPythonError,
    PermissionDeniedError,
    ToolMissingError,
    UsageError,
)

T = TypeVar("T")
PROCFS_TIMEOUT = 10.0
CHECKPOINT_LIST_TIMEOUT = 5.0
LOG_TIMEOUT = 5.0
INTERRUPT_GRACE = 5.0  # how long Ctrl-C waits for in-flight collectors (their tools killed)
# A round runs every target at once: each worker mostly waits on a py-spy child, so more
# workers than CPUs is right; the cap bounds the attach load on a big host.
MAX_WORKERS = 64
COMPRESS_FROM = 16  # targets: a bigger capture is written gzipped (a small one stays readable)
LAST_WATCH = 1.0  # seconds the threads are watched after the last round
EXITED_STATES = ("Z", "X", "x")  # a zombie has no memory to read: it has exited

# Progress: (what is happening, units done, units in all).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class CaptureOptions:
    pids: tuple[int, ...]
    output: Path
    samples: int = 3
    interval: float = 1.0
    native: bool = False
    all_threads: bool = False
    nonblocking: bool = False
    logs: tuple[Path, ...] = ()
    checkpoint_dirs: tuple[Path, ...] = ()
    tf_servers: tuple[str, ...] = ()
    tf_trace_ms: int = 500
    watch_stacks: bool = False  # one more non-pausing py-spy dump midway between rounds
    force: bool = False
    command: tuple[str, ...] = ()
    # Refuse to start without py-spy; a remote host (--host) is captured without stacks
    # instead, and its outcomes say why.
    require_py_spy: bool = True
    # gzip every file but the manifest; None: when more than COMPRESS_FROM targets.
    compress: bool | None = None


@dataclass
class Problem:
    kind: FailureKind
    message: str


# The most specific problem decides the exit code; anything else is a partial capture.
EXIT_CODES = (
    (FailureKind.PERMISSION, ExitCode.PERMISSION),
    (FailureKind.NOT_PYTHON, ExitCode.NOT_PYTHON),
    (FailureKind.EXITED, ExitCode.TARGET_EXITED),
    (FailureKind.NO_ANSWER, ExitCode.TF_SERVER_UNREACHABLE),
    (FailureKind.CLIENT, ExitCode.TF_SERVER_UNREACHABLE),
)


@dataclass
class CaptureResult:
    output: Path
    manifest: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        kinds = {p.kind for p in self.problems}
        for kind, code in EXIT_CODES:
            if kind in kinds:
                return code
        return ExitCode.PARTIAL_CAPTURE if kinds else ExitCode.OK


MAX_SAMPLES = 1000
MAX_INTERVAL = 3600.0
MAX_TRACE_MS = 600_000


def validate(options: CaptureOptions) -> None:
    """Refuse, before anything runs, options that cannot work: say which and why."""
    if not 1 <= options.samples <= MAX_SAMPLES:
        raise UsageError(f"--samples must be between 1 and {MAX_SAMPLES} (got {options.samples}).")
    if not math.isfinite(options.interval) or not 0 <= options.interval <= MAX_INTERVAL:
        raise UsageError(
            f"--interval must be a number of seconds from 0 to {MAX_INTERVAL:.0f} "
            f"(got {options.interval})."
        )
    if options.tf_servers and not 1 <= options.tf_trace_ms <= MAX_TRACE_MS:
        raise UsageError(
            f"--tf-trace-ms must be between 1 and {MAX_TRACE_MS} (got {options.tf_trace_ms})."
        )
    for path in options.logs:
        try:
            regular = call_bounded(partial(os.path.isfile, path), LOG_TIMEOUT)
            exists = regular or call_bounded(partial(os.path.exists, path), LOG_TIMEOUT)
        except BoundedCallTimeout:
            continue  # a log on a hung mount: the capture says so when it reads it
        if not exists:
            raise UsageError(f"--log {path}: no such file.")
        if not regular:
            raise UsageError(
                f"--log {path}: not a regular file (a directory, device or pipe).",
                help_text="Give the path of a log file the job writes.",
            )
    for directory in options.checkpoint_dirs:
        try:
            found = call_bounded(partial(os.path.isdir, directory), CHECKPOINT_LIST_TIMEOUT)
        except BoundedCallTimeout:
            continue  # a hung filesystem: evidence in itself, the capture records it
        if not found:
            raise UsageError(
                f"--checkpoint-dir {directory}: no such directory.",
                help_text="Give the directory the job saves checkpoints into (its "
                "--checkpoint_dir / --logdir / model_dir).",
            )


def preflight(
    pids: tuple[int, ...], logs: tuple[Path, ...] = (), require_py_spy: bool = True
) -> None:
    """Refuse, before writing anything, what cannot work: wrong pid, no rights, not Python.
    With no pid but --log files, the capture keeps the logs of a job that already ended
    (a TF2 job that crashed when a peer was lost)."""
    if not pids and not logs:
        raise UsageError(
            "No target process: pass --pid PID (repeatable) or --discover, or only --log "
            "FILE for the logs of a job that already ended.",
            help_text="Find the pids with `ps -ef | grep job_name`, or use --discover.",
        )
    missing = [pid for pid in pids if not procfs.exists(pid)]
    if missing:
        raise NoSuchProcessError(
            f"No process with pid {', '.join(map(str, missing))} on this host."
        )
    threads = {pid: owner for pid in pids if (owner := procfs.thread_group(pid)) not in (pid, None)}
    if threads:
        named = ", ".join(f"{tid} (a thread of process {owner})" for tid, owner in threads.items())
        raise UsageError(
            f"Not a process id: {named}.",
            help_text="Pass the process id (the Tgid in /proc/TID/status), not a thread id.",
        )
    exited = [pid for pid in pids if procfs.read_state(pid) in (*EXITED_STATES, None)]
    if exited:
        raise NoSuchProcessError(
            f"Process {', '.join(map(str, exited))} has exited (a zombie its parent has not "
            "reaped): there is nothing left to capture."
        )
    denied = [pid for pid in pids if not procfs.is_readable(pid)]
    if denied:
        raise PermissionDeniedError(
            f"Permission denied reading process {', '.join(map(str, denied))} "
            f"(running as uid {os.getuid()})."
        )
    not_python = [pid for pid in pids if procfs.looks_like_python(pid) is False]
    if not_python:
        names = ", ".join(f"{pid} ({procfs.read_comm(pid)})" for pid in not_python)
        raise NotPythonError(f"Not a Python process: {names}.")
    if require_py_spy and find_tool("py-spy") is None:
        raise ToolMissingError("py-spy is not installed or not on PATH.")


def _restore_stopped(target: Target) -> None:
    """An attach must never resume a process the user (or the fault) had stopped."""
    if target.state in ("T", "t") and procfs.read_state(target.pid) not in ("T", "t", None):
        os.kill(target.pid, signal.SIGSTOP)


class Capture:
    def __init__(self, options: CaptureOptions, progress: Progress | None = None) -> None:
        self.options = options
        self.progress = progress or (lambda what, done, total: None)
        self.targets = [Target(pid) for pid in options.pids]
        self.problems: list[Problem] = []
        self.pyspy = PySpyCollector(native=options.native, nonblocking=options.nonblocking)
        self.collectors: list[ProcessCollector] = [procfs.ProcfsCollector(), self.pyspy]
        if options.all_threads:
            self.collectors.append(NativeAllThreadsCollector())
        self.checkpoint_dirs: list[Path] = [p.resolve() for p in options.checkpoint_dirs]
        self.lock = threading.Lock()
        self.writer: DumpWriter | None = None
        self.plan: OutputPlan | None = None
        self.stopping = threading.Event()  # set on Ctrl-C: start no new collector
        self.log_sizes: dict[int, list[dict[str, Any]]] = {}  # --log index -> per round
        self.compress = (
            options.compress if options.compress is not None
            else len(options.pids) > COMPRESS_FROM
        )

    # -- helpers -------------------------------------------------------------------
    def _record(
        self,
        target: str,
        collector: str,
        status: CollectorStatus,
        round_index: int | None,
        reason: str = "",
        started: float | None = None,
        files: list[str] | None = None,
        kind: FailureKind = FailureKind.NONE,
        problem: bool = True,
    ) -> None:
        """Add one outcome to the manifest; a failure is also a problem for the exit code."""
        assert self.writer is not None
        seconds = time.monotonic() - started if started is not None else 0.0
        if status is CollectorStatus.FAILED and kind is FailureKind.NONE:
            kind = FailureKind.ERROR
        outcome = Outcome(
            target, collector, status, round_index, reason, seconds, files or [], kind
        )
        with self.lock:
            self.writer.add_outcome(outcome)
            if status is CollectorStatus.FAILED and problem:
                label = f"{collector} {target}"
                if round_index is not None:
                    label += f" round {round_index}"
                self.problems.append(Problem(kind, f"{label}: {reason}"))

    def _process_round(self, target: Target, round_index: int) -> None:
        assert self.writer is not None
        pid = str(target.pid)
        if target.gone:
            for collector in self.collectors:
                self._record(
                    pid,
                    collector.name,
                    CollectorStatus.SKIPPED,
                    round_index,
                    "the process had exited",
                    kind=FailureKind.EXITED,
                )
            return
        target.state = procfs.read_state(target.pid)
        if target.state is None or target.state in EXITED_STATES:
            target.gone = True
            self._record(
                pid,
                "procfs",
                CollectorStatus.FAILED,
                round_index,
                "the process exited during the capture",
                kind=FailureKind.EXITED,
            )
            return
        for collector in self.collectors:
            if self.stopping.is_set():
                return
            started = time.monotonic()
            try:
                files = self._collect(collector, target, round_index)
                self._record(
                    pid, collector.name, CollectorStatus.OK, round_index, "", started, files
                )
            except CollectorFailure as failure:
                kind = failure.kind
                status = CollectorStatus.FAILED
                if kind is FailureKind.INTERRUPTED:
                    status = CollectorStatus.SKIPPED
                elif kind in (FailureKind.EXITED, FailureKind.ERROR) and procfs.read_state(
                    target.pid
                ) in (*EXITED_STATES, None):
                    kind = FailureKind.EXITED
                    target.gone = True
                self._record(
                    pid,
                    collector.name,
                    status,
                    round_index,
                    failure.reason,
                    started,
                    failure.files,
                    kind,
                )
                if kind is FailureKind.INTERRUPTED:
                    return
            finally:
                if not target.gone:
                    _restore_stopped(target)
            if target.gone:
                break

    def _collect(self, collector: ProcessCollector, target: Target, round_index: int) -> list[str]:
        assert self.writer is not None
        if collector.name != "procfs":
            return collector.collect(target, round_index, self.writer)
        try:
            return call_bounded(
                partial(collector.collect, target, round_index, self.writer), PROCFS_TIMEOUT
            )
        except BoundedCallTimeout:
            # stat() of an open file on a hung mount: read again without sizes.
            data = procfs.read_round(target.pid, stat_files=False)
            data["stat_timeout"] = True
            return [procfs.write_round(self.writer, round_index, data)]

    def _checkpoint_round(self, round_index: int) -> None:
        assert self.writer is not None
        for target in self.targets:
            if target.gone:
                continue
            # cwd from process.json and files from this round's procfs read: re-reading
            # /proc (maps, environ, every fd) per target here cost more than the round.
            for found in checkpoint.discover_dirs(target.pid, target.cwd, target.open_files):
                if found not in self.checkpoint_dirs:
                    self.checkpoint_dirs.append(found)
        for index, directory in enumerate(self.checkpoint_dirs):
            started = time.monotonic()
            relative = layout.checkpoint_file(index, round_index)
            try:
                data = call_bounded(
                    partial(checkpoint.read_checkpoint_dir, directory), CHECKPOINT_LIST_TIMEOUT
                )
            except BoundedCallTimeout as exc:
                # Evidence in itself: the filesystem under the checkpoint does not answer.
                data = {
                    "dir": str(directory),
                    "time": time.time(),
                    "exists": None,
                    "files": [],
                    "listing_timed_out": True,
                }
                relative = self.writer.write_json(relative, data)
                reason = f"listing the directory {exc} (filesystem not answering)"
                self._record(
                    str(directory),
                    "checkpoint",
                    CollectorStatus.FAILED,
                    round_index,
                    reason,
                    started,
                    [relative],
                    FailureKind.TIMEOUT,
                )
                continue
            except OSError as exc:
                self._record(
                    str(directory),
                    "checkpoint",
                    CollectorStatus.FAILED,
                    round_index,
                    str(exc),
                    started,
                )
                continue
            relative = self.writer.write_json(relative, data)
            self._record(
                str(directory),
                "checkpoint",
                CollectorStatus.OK,
                round_index,
                "",
                started,
                [relative],
            )
        with self.lock:
            self.writer.manifest["checkpoint_dirs"] = [
                {"index": i, "dir": str(d)} for i, d in enumerate(self.checkpoint_dirs)
            ]

    def _tf_trace(self, address: str, index: int) -> None:
        assert self.writer is not None
        relative = layout.tf_dir(index)
        started = time.monotonic()
        reason = tf_profiler.probe(address)
        if reason:
            self._record(
                address,
                "tf_profiler",
                CollectorStatus.FAILED,
                None,
                reason,
                started,
                kind=FailureKind.NO_ANSWER,
            )
            return
        result = tf_profiler.run_trace(
            address, self.writer.path(relative), self.options.tf_trace_ms
        )
        files = [
            str(p.relative_to(self.writer.root))
            for p in sorted(self.writer.path(relative).glob("*"))
            if p.is_file()
        ]
        self._record(
            address,
            "tf_profiler",
            CollectorStatus.OK if result.ok else CollectorStatus.FAILED,
            None,
            result.reason,
            started,
            files,
            result.kind,
        )

    def _logs(self) -> None:
        assert self.writer is not None
        for target in self.targets:
            if target.gone:
                continue
            pid = str(target.pid)
            try:
                # is_file() stats the log: on a hung mount that never returns.
                streams = call_bounded(partial(logs.std_stream_files, target.pid), LOG_TIMEOUT)
            except (OSError, BoundedCallTimeout) as exc:
                reason = f"checking its log files: {exc}"
                self._record(pid, "log:stdout", CollectorStatus.FAILED, None, reason)
                continue
            seen: set[str] = set()
            tails: dict[str, dict[str, int]] = {}
            for stream, path in streams.items():
                if path in seen:
                    continue
                seen.add(path)
                fd = 1 if stream == "stdout" else 2
                got = self._tail(
                    pid,
                    f"log:{stream}",
                    f"/proc/{target.pid}/fd/{fd}",
                    layout.std_stream_file(target.pid, stream),
                )
                if got is not None:
                    tails[stream] = got.to_json()
            self._flight(target)
            with self.lock:
                for entry in self.writer.manifest["targets"]:
                    if entry["pid"] == target.pid:
                        entry["std_streams"] = streams
                        # Byte offsets of the tails: with each round's file size (procfs
                        # files of fd 1 and 2) they place untimed lines between rounds.
                        entry["log_tails"] = tails
        for index, log_path in enumerate(self.options.logs):
            relative = layout.extra_log_file(index, log_path.name)
            got = self._tail(str(log_path), "log", str(log_path), relative)
            if got is not None:
                with self.lock:
                    self.writer.manifest["logs"].append(
                        {
                            "path": str(log_path),
                            "file": relative,
                            **got.to_json(),
                            "sizes": self.log_sizes.get(index, []),
                        }
                    )

    def _flight(self, target: Target) -> None:
        """The flight recorder's file, when the target runs one (postmortem.recorder)."""
        assert self.writer is not None
        started = time.monotonic()
        try:
            directory = call_bounded(
                partial(flight.find_dir, target.pid, target.open_files, target.env), LOG_TIMEOUT
            )
            if directory is None:
                return
            data = call_bounded(partial(flight.read, directory), LOG_TIMEOUT)
        except (OSError, BoundedCallTimeout) as exc:
            self._record(str(target.pid), "flight", CollectorStatus.FAILED, None, str(exc), started)
            return
        relative = self.writer.write_bytes(layout.flight_file(target.pid), data)
        self._record(str(target.pid), "flight", CollectorStatus.OK, None, "", started, [relative])

    def _log_sizes_round(self, round_index: int) -> None:
        """The size of each --log file at this round: when its lines were written."""
        for index, log_path in enumerate(self.options.logs):
            try:
                size = call_bounded(partial(logs.size_of, log_path), LOG_TIMEOUT)
            except (OSError, BoundedCallTimeout):
                continue
            self.log_sizes.setdefault(index, []).append(
                {"round": round_index, "time": time.time(), "size": size}
            )

    def _tail(self, target: str, collector: str, source: str, relative: str) -> logs.Tail | None:
        """Copy the tail of a log into the dump, bounded in time (a log on a hung mount)."""
        assert self.writer is not None
        started = time.monotonic()
        try:
            got = call_bounded(partial(logs.tail, source), LOG_TIMEOUT)
            relative = self.writer.write_bytes(relative, got.data)
        except (OSError, BoundedCallTimeout) as exc:
            self._record(target, collector, CollectorStatus.FAILED, None, str(exc), started)
            return None
        self._record(target, collector, CollectorStatus.OK, None, "", started, [relative])
        return got

    # -- the run ---------------------------------------------------------------------
    def _flush(self, complete: bool = False) -> None:
        assert self.writer is not None
        with self.lock:  # collector threads append outcomes while we serialize
            self.writer.flush(complete=complete)

    def _rounds(self, pool: ThreadPoolExecutor) -> None:
        assert self.writer is not None
        options = self.options
        total = options.samples + 1
        for round_index in range(options.samples):
            self.progress(f"round {round_index + 1}/{options.samples}", round_index, total)
            started = time.time()
            futures = [pool.submit(self._process_round, t, round_index) for t in self.targets]
            for future in futures:
                future.result()
            self._checkpoint_round(round_index)
            self._log_sizes_round(round_index)
            with self.lock:
                self.writer.add_round(RoundInfo(round_index, started, time.time()))
                self.writer.manifest["pauses"] = {str(t.pid): list(t.pauses) for t in self.targets}
            self._flush()
            last = round_index + 1 == options.samples
            window = (
                min(options.interval, LAST_WATCH)
                if last
                else max(0.0, started + options.interval - time.time())
            )
            self._watch(pool, round_index, window)

    def _watch(self, pool: ThreadPoolExecutor, round_index: int, seconds: float) -> None:
        """Until the next round: the watched threads' wakeups, and halfway through one more
        look at every stack without pausing anyone."""
        assert self.writer is not None
        if seconds <= 0 or self.stopping.is_set():
            return
        alive = [t for t in self.targets if not t.gone]
        tids = {t.pid: t.python_tids or [t.pid] for t in alive}
        samples: list[Future[None]] = []

        def midway() -> None:
            if self.options.watch_stacks and self.pyspy.binary is not None:
                samples.extend(pool.submit(self._sample, t, round_index) for t in alive)

        others = {t.pid: [tid for tid in t.other_tids if tid not in tids[t.pid]] for t in alive}
        results = watch.watch(tids, seconds, self.stopping, midway=midway, others=others)
        for future in samples:
            future.result()
        for target in alive:
            if target.pid in results and procfs.exists(target.pid):
                relative = layout.watch_file(target.pid, round_index)
                self.writer.write_json(relative, results[target.pid])

    def _sample(self, target: Target, round_index: int) -> None:
        assert self.writer is not None
        started = time.monotonic()
        try:
            files = self.pyspy.sample(target, round_index, self.writer)
        except CollectorFailure as failure:
            # Only a second look: its failure leaves the round's own dump standing.
            gone = procfs.read_state(target.pid) in (*EXITED_STATES, None)
            self._record(
                str(target.pid),
                "pyspy-watch",
                CollectorStatus.SKIPPED if gone else CollectorStatus.FAILED,
                round_index,
                failure.reason,
                started,
                kind=failure.kind,
                problem=False,
            )
            return
        self._record(
            str(target.pid), "pyspy-watch", CollectorStatus.OK, round_index, "", started, files
        )

    def _start(self) -> DumpWriter:
        """Write process.json for each target and the first manifest."""
        options = self.options
        assert self.plan is not None
        writer = self.writer = DumpWriter(
            self.plan.build,
            list(options.command),
            {
                "samples": options.samples,
                "interval": options.interval,
                "native": options.native,
                "all_threads": options.all_threads,
                "nonblocking": options.nonblocking,
                "tf_trace_ms": options.tf_trace_ms,
                "watch_stacks": options.watch_stacks,
                "compress": self.compress,
            },
            compress=self.compress,
        )
        for target in self.targets:
            try:
                info = procfs.read_process_info(target.pid)
            except OSError:
                target.gone = True
                self.problems.append(
                    Problem(FailureKind.EXITED, f"process {target.pid} exited before capture")
                )
                continue
            target.cwd = info["cwd"]
            target.env = dict(info.get("env") or {})
            relative = writer.write_json(layout.process_file(target.pid), info)
            writer.add_target(
                {"pid": target.pid, "dir": layout.process_dir(target.pid), "process_file": relative}
            )
        writer.manifest["tf_servers"] = [
            {"index": i, "address": a} for i, a in enumerate(options.tf_servers)
        ]
        writer.manifest["interrupted"] = False
        writer.manifest["pauses"] = {}
        if not self.targets:
            # `--log` files alone, of a job that already ended: say so, so that a dump whose
            # targets were lost is never taken for one.
            writer.manifest["logs_only"] = True
        self._flush()
        return writer

    def run(self) -> CaptureResult:
        options = self.options
        validate(options)
        preflight(options.pids, tuple(options.logs), options.require_py_spy)
        self.plan = OutputPlan.prepare(options.output, options.force)
        try:
            result = self._run()
        except OSError as exc:
            self.plan.abort()
            raise unwritable(self.plan.final, exc) from None
        except BaseException:
            if self.writer is None or not self.writer.manifest["rounds"]:
                self.plan.abort()  # nothing worth keeping; an old dump stays as it was
            raise
        try:
            self.plan.commit()
        except OSError as exc:
            raise unwritable(self.plan.final, exc) from None
        return result

    def _run(self) -> CaptureResult:
        options = self.options
        reset_stop()
        # A Ctrl-C from here on still leaves a valid (incomplete) dump behind.
        interrupted = False
        pool = ThreadPoolExecutor(
            max_workers=min(MAX_WORKERS, max(2, len(self.targets))),
            thread_name_prefix="postmortem-capture",
        )
        try:
            self._start()
            tracers = [
                threading.Thread(target=self._tf_trace, args=(address, i), daemon=True)
                for i, address in enumerate(options.tf_servers)
            ]
            for thread in tracers:
                thread.start()
            self._rounds(pool)
            self.progress("logs and traces", options.samples, options.samples + 1)
            self._logs()
            deadline = time.monotonic() + tf_profiler.longest(options.tf_trace_ms)
            for thread in tracers:
                thread.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            interrupted = True
            self._stop(pool)
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=True)
        writer = self.writer
        if writer is None or not writer.manifest["rounds"]:
            raise KeyboardInterrupt  # interrupted before a round was kept: nothing to keep
        with self.lock:
            writer.manifest["interrupted"] = interrupted
            writer.manifest["pauses"] = {str(t.pid): list(t.pauses) for t in self.targets}
        self._flush(complete=not interrupted)
        self.progress("done", options.samples + 1, options.samples + 1)
        assert self.plan is not None
        return CaptureResult(self.plan.final, writer.manifest, self.problems, interrupted)

    def _stop(self, pool: ThreadPoolExecutor) -> None:
        """Ctrl-C: start nothing new, kill the running attach tools, give the collectors
        in flight a moment to record what they have, and re-stop any stopped target."""
        self.stopping.set()
        stop_all()
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + INTERRUPT_GRACE
        for thread in list(getattr(pool, "_threads", ())):
            thread.join(max(0.0, deadline - time.monotonic()))
        for target in self.targets:
            if not target.gone:
                _restore_stopped(target)


def capture(options: CaptureOptions, progress: Progress | None = None) -> CaptureResult:
    return Capture(options, progress).run()
