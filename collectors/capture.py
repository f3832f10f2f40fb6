"""The capture loop: N rounds over every target in parallel, written into a dump.

Harmless by construction: procfs reads need no attach; py-spy pauses a running target
for one dump at most and never touches a stopped one (--nonblocking); a target that was
stopped is stopped again if any attach let it run; every call is bounded in time; and
nothing is written anywhere but the output directory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from collectors import checkpoint, logs, procfs, tf_profiler
from collectors.base import CollectorFailure, ProcessCollector, Target
from collectors.dump import DumpWriter, Outcome, RoundInfo, prepare_output, process_dir
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
    force: bool = False
    command: tuple[str, ...] = ()


@dataclass
class Problem:
    kind: str  # gone | permission | not-python | tf-server | tool-missing | error
    message: str


@dataclass
class CaptureResult:
    output: Path
    manifest: dict[str, Any]
    problems: list[Problem] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> ExitCode:
        kinds = {p.kind for p in self.problems}
        for kind, code in (
            ("permission", ExitCode.PERMISSION),
            ("not-python", ExitCode.NOT_PYTHON),
            ("gone", ExitCode.TARGET_EXITED),
            ("tf-server", ExitCode.TF_SERVER_UNREACHABLE),
        ):
            if kind in kinds:
                return code
        return ExitCode.PARTIAL_CAPTURE if kinds else ExitCode.OK


def preflight(pids: tuple[int, ...]) -> None:
    """Refuse, before writing anything, what cannot work: wrong pid, no rights, not Python."""
    if not pids:
        raise UsageError(
            "No target process: pass --pid PID (repeatable) or --discover.",
            help_text="Find the pids with `ps -ef | grep job_name`, or use --discover.",
        )
    missing = [pid for pid in pids if not procfs.exists(pid)]
    if missing:
        raise NoSuchProcessError(
            f"No process with pid {', '.join(map(str, missing))} on this host."
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
    if find_tool("py-spy") is None:
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
        self.collectors: list[ProcessCollector] = [
            procfs.ProcfsCollector(),
            PySpyCollector(native=options.native, nonblocking=options.nonblocking),
        ]
        if options.all_threads:
            self.collectors.append(NativeAllThreadsCollector())
        self.checkpoint_dirs: list[Path] = [p.resolve() for p in options.checkpoint_dirs]
        self.lock = threading.Lock()
        self.writer: DumpWriter | None = None
        self.stopping = threading.Event()  # set on Ctrl-C: start no new collector

    # -- helpers -------------------------------------------------------------------
    def _record(self, outcome: Outcome, problem_kind: str | None = None) -> None:
        assert self.writer is not None
        with self.lock:
            self.writer.add_outcome(outcome)
            if problem_kind is not None:
                label = f"{outcome.collector} {outcome.target}"
                if outcome.round is not None:
                    label += f" round {outcome.round}"
                self.problems.append(Problem(problem_kind, f"{label}: {outcome.reason}"))

    def _process_round(self, target: Target, round_index: int) -> None:
        assert self.writer is not None
        if target.gone:
            for collector in self.collectors:
                self._record(
                    Outcome(
                        str(target.pid),
                        collector.name,
                        "skipped",
                        round_index,
                        "the process had exited",
                    )
                )
            return
        target.state = procfs.read_state(target.pid)
        if target.state is None or target.state in EXITED_STATES:
            target.gone = True
            self._record(
                Outcome(
                    str(target.pid),
                    "procfs",
                    "failed",
                    round_index,
                    "the process exited during the capture",
                ),
                "gone",
            )
            return
        for collector in self.collectors:
            if self.stopping.is_set():
                return
            started = time.monotonic()
            try:
                if collector.name == "procfs":
                    try:
                        files = call_bounded(
                            partial(collector.collect, target, round_index, self.writer),
                            PROCFS_TIMEOUT,
                        )
                    except BoundedCallTimeout:
                        # stat() of an open file on a hung mount: read again without sizes.
                        data = procfs.read_round(target.pid, stat_files=False)
                        data["stat_timeout"] = True
                        files = [
                            self.writer.write_json(
                                f"processes/{target.pid}/round-{round_index:03d}/procfs.json", data
                            )
                        ]
                else:
                    files = collector.collect(target, round_index, self.writer)
                self._record(
                    Outcome(
                        str(target.pid),
                        collector.name,
                        "ok",
                        round_index,
                        seconds=time.monotonic() - started,
                        files=files,
                    )
                )
            except CollectorFailure as failure:
                kind = failure.kind
                if kind == "interrupted":
                    self._record(
                        Outcome(
                            str(target.pid),
                            collector.name,
                            "skipped",
                            round_index,
                            failure.reason,
                            time.monotonic() - started,
                            failure.files,
                        )
                    )
                    return
                if kind in ("gone", "error") and procfs.read_state(target.pid) in (
                    *EXITED_STATES,
                    None,
                ):
                    kind = "gone"
                    target.gone = True
                self._record(
                    Outcome(
                        str(target.pid),
                        collector.name,
                        "failed",
                        round_index,
                        failure.reason,
                        time.monotonic() - started,
                        failure.files,
                    ),
                    kind,
                )
            finally:
                if not target.gone:
                    _restore_stopped(target)
            if target.gone:
                break

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
            relative = f"checkpoint/{index}/round-{round_index:03d}.json"
            try:
                data = call_bounded(
                    partial(checkpoint.read_checkpoint_dir, directory), CHECKPOINT_LIST_TIMEOUT
                )
                self.writer.write_json(relative, data)
                self._record(
                    Outcome(
                        str(directory),
                        "checkpoint",
                        "ok",
                        round_index,
                        seconds=time.monotonic() - started,
                        files=[relative],
                    )
                )
            except BoundedCallTimeout as exc:
                # Evidence in itself: the filesystem under the checkpoint does not answer.
                self.writer.write_json(
                    relative,
                    {
                        "dir": str(directory),
                        "time": time.time(),
                        "exists": None,
                        "files": [],
                        "listing_timed_out": True,
                    },
                )
                self._record(
                    Outcome(
                        str(directory),
                        "checkpoint",
                        "failed",
                        round_index,
                        f"listing the directory {exc} (filesystem not answering)",
                        time.monotonic() - started,
                        [relative],
                    ),
                    "error",
                )
            except OSError as exc:
                self._record(
                    Outcome(
                        str(directory),
                        "checkpoint",
                        "failed",
                        round_index,
                        str(exc),
                        time.monotonic() - started,
                    ),
                    "error",
                )
        with self.lock:
            self.writer.manifest["checkpoint_dirs"] = [
                {"index": i, "dir": str(d)} for i, d in enumerate(self.checkpoint_dirs)
            ]

    def _tf_trace(self, address: str, index: int) -> None:
        assert self.writer is not None
        relative = f"tf/{index}"
        reason = tf_profiler.probe(address)
        if reason:
            self._record(Outcome(address, "tf_profiler", "failed", None, reason), "tf-server")
            return
        ok, reason, seconds = tf_profiler.run_trace(
            address, self.writer.path(relative), self.options.tf_trace_ms
        )
        files = [
            str(p.relative_to(self.writer.root))
            for p in sorted(self.writer.path(relative).glob("*"))
            if p.is_file()
        ]
        self._record(
            Outcome(address, "tf_profiler", "ok" if ok else "failed", None, reason, seconds, files),
            None if ok else "tf-server",
        )

    def _logs(self) -> None:
        assert self.writer is not None
        for target in self.targets:
            if target.gone:
                continue
            seen: set[str] = set()
            try:
                # is_file() stats the log: on a hung mount that never returns.
                streams = call_bounded(partial(logs.std_stream_files, target.pid), LOG_TIMEOUT)
            except (OSError, BoundedCallTimeout) as exc:
                self._record(
                    Outcome(
                        str(target.pid),
                        "log:stdout",
                        "failed",
                        None,
                        f"checking its log files: {exc}",
                    ),
                    "error",
                )
                continue
            for stream, path in streams.items():
                if path in seen:
                    continue
                seen.add(path)
                relative = f"{process_dir(target.pid)}/logs/{stream}.txt"
                try:
                    fd = 1 if stream == "stdout" else 2
                    data = call_bounded(
                        partial(logs.tail, f"/proc/{target.pid}/fd/{fd}"), LOG_TIMEOUT
                    )
                    self.writer.write_bytes(relative, data)
                    self._record(
                        Outcome(str(target.pid), f"log:{stream}", "ok", None, files=[relative])
                    )
                except (OSError, BoundedCallTimeout) as exc:
                    self._record(
                        Outcome(str(target.pid), f"log:{stream}", "failed", None, str(exc)), "error"
                    )
            with self.lock:
                for entry in self.writer.manifest["targets"]:
                    if entry["pid"] == target.pid:
                        entry["std_streams"] = streams
        for index, log_path in enumerate(self.options.logs):
            relative = f"logs/{index}-{log_path.name}"
            try:
                data = call_bounded(partial(logs.tail, log_path), LOG_TIMEOUT)
                self.writer.write_bytes(relative, data)
                with self.lock:
                    self.writer.manifest["logs"].append({"path": str(log_path), "file": relative})
                self._record(Outcome(str(log_path), "log", "ok", None, files=[relative]))
            except (OSError, BoundedCallTimeout) as exc:
                self._record(Outcome(str(log_path), "log", "failed", None, str(exc)), "error")

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
            with self.lock:
                self.writer.add_round(RoundInfo(round_index, started, time.time()))
                self.writer.manifest["pauses"] = {str(t.pid): list(t.pauses) for t in self.targets}
            self._flush()
            if round_index + 1 < options.samples:
                time.sleep(max(0.0, started + options.interval - time.time()))

    def _start(self) -> DumpWriter:
        """Write process.json for each target and the first manifest."""
        options = self.options
        prepare_output(options.output, options.force)
        writer = self.writer = DumpWriter(
            options.output,
            list(options.command),
            {
                "samples": options.samples,
                "interval": options.interval,
                "native": options.native,
                "all_threads": options.all_threads,
                "nonblocking": options.nonblocking,
                "tf_trace_ms": options.tf_trace_ms,
            },
        )
        for target in self.targets:
            try:
                info = procfs.read_process_info(target.pid)
            except OSError:
                target.gone = True
                self.problems.append(Problem("gone", f"process {target.pid} exited before capture"))
                continue
            target.cwd = info["cwd"]
            relative = writer.write_json(f"{process_dir(target.pid)}/process.json", info)
            writer.add_target(
                {"pid": target.pid, "dir": process_dir(target.pid), "process_file": relative}
            )
        writer.manifest["tf_servers"] = [
            {"index": i, "address": a} for i, a in enumerate(options.tf_servers)
        ]
        writer.manifest["interrupted"] = False
        writer.manifest["pauses"] = {}
        self._flush()
        return writer

    def run(self) -> CaptureResult:
        options = self.options
        if options.samples < 1:
            raise UsageError("--samples must be at least 1.")
        if options.interval < 0:
            raise UsageError("--interval cannot be negative.")
        preflight(options.pids)
        for path in options.logs:
            if not path.is_file():
                raise UsageError(f"--log {path}: no such file.")
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
            deadline = time.monotonic() + options.tf_trace_ms / 1000 + 60
            for thread in tracers:
                thread.join(max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            interrupted = True
            self._stop(pool)
        finally:
            pool.shutdown(wait=not interrupted, cancel_futures=True)
        writer = self.writer
        if writer is None:
            raise KeyboardInterrupt  # interrupted before the dump existed: nothing to keep
        with self.lock:
            writer.manifest["interrupted"] = interrupted
            writer.manifest["pauses"] = {str(t.pid): list(t.pauses) for t in self.targets}
        self._flush(complete=not interrupted)
        self.progress("done", options.samples + 1, options.samples + 1)
        return CaptureResult(options.output, writer.manifest, self.problems, interrupted)

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
