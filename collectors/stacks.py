"""Stack collectors: py-spy (Python threads), pystack or gdb (every native thread).

Raw tool output is kept as it came; the loader parses it. A stopped target is read with
py-spy's --nonblocking (py-spy cannot suspend it and fails otherwise), and every attach is
bounded in time.
"""

from __future__ import annotations

import json

from collectors import layout, procfs
from collectors.base import CollectorFailure, Target
from collectors.dump import DumpWriter
from collectors.layout import FailureKind, StackSource
from collectors.tools import (
    SUSPEND_FAILED_MARKER,
    BoundedCallTimeout,
    ToolRun,
    call_bounded,
    classify_failure,
    find_tool,
    run_bounded,
)

PYSPY_TIMEOUT = 10.0
PYSPY_NATIVE_TIMEOUT = 60.0
PYSTACK_TIMEOUT = 60.0
GDB_TIMEOUT = 90.0
SOURCE_CONTEXT = 150  # lines kept above each frame: enclosing `with lock:` blocks can be far up
SOURCE_READ_TIMEOUT = 2.0
SOURCE_FILE_LIMIT = 4 * 1024 * 1024


def _read_source(pid: int, filename: str) -> list[str]:
    """A source file as the target sees it (its mount namespace), read-only and bounded."""
    if not filename.startswith("/"):
        return []
    for candidate in (f"/proc/{pid}/root{filename}", filename):
        data = _read_prefix(candidate)
        if data is not None:
            return data.decode(errors="replace").splitlines()
    return []


def _read_prefix(path: str) -> bytes | None:
    """Read-only and bounded in time: source on a hung NFS home must not stall a round."""

    def read() -> bytes:
        with open(path, "rb") as handle:
            return handle.read(SOURCE_FILE_LIMIT)

    try:
        return call_bounded(read, SOURCE_READ_TIMEOUT)
    except (OSError, BoundedCallTimeout):
        return None


def _stopped(state: str | None) -> bool:
    return state in ("T", "t")


def _has_uninterruptible_thread(pid: int) -> bool:
    """A thread in state D cannot be suspended: a blocking attach would wait forever
    (measured: `py-spy dump` never returns on a process with a writer stuck in FUSE)."""
    return any(t["state"] == "D" for t in procfs.read_threads(pid)) if procfs.exists(pid) else False


class PySpyCollector:
    name = "pyspy"

    def __init__(self, native: bool = False, nonblocking: bool = False) -> None:
        self.native = native
        self.nonblocking = nonblocking
        self.binary = find_tool("py-spy")

    def _dump(self, pid: int, nonblocking: bool) -> ToolRun:
        argv = [str(self.binary), "dump", "--json", "--pid", str(pid)]
        if nonblocking:
            argv.append("--nonblocking")
        if self.native:
            argv.append("--native")
        return run_bounded(argv, PYSPY_NATIVE_TIMEOUT if self.native else PYSPY_TIMEOUT)

    def _nonblocking_reason(self, target: Target) -> str:
        """Why this read must not pause the target ('' when a blocking dump is fine)."""
        if self.nonblocking:
            return "--nonblocking was given"
        if _stopped(target.state):
            return "the process is stopped (state T): it must stay stopped"
        if _has_uninterruptible_thread(target.pid):
            return "a thread is in uninterruptible I/O (state D): it cannot be suspended"
        return ""

    def collect(self, target: Target, round_index: int, out: DumpWriter) -> list[str]:
        if self.binary is None:
            raise CollectorFailure("py-spy is not installed", kind=FailureKind.TOOL_MISSING)
        reason = self._nonblocking_reason(target)
        run = self._dump(target.pid, bool(reason))
        if not reason and (
            run.timed_out or SUSPEND_FAILED_MARKER in run.stderr.decode(errors="replace").lower()
        ):
            # Stopped, or a thread entered D, between our state read and the attach:
            # read it without suspending.
            reason = (
                f"a blocking dump timed out after {run.seconds:.1f}s: read again without pausing"
                if run.timed_out
                else "py-spy could not suspend it (stopped, or a thread in D, as it attached): "
                "read again without pausing"
            )
            run = self._dump(target.pid, True)
        files = [out.write_bytes(layout.pyspy_file(target.pid, round_index), run.stdout)]
        if run.stderr.strip():
            files.append(
                out.write_bytes(layout.pyspy_stderr_file(target.pid, round_index), run.stderr)
            )
        target.pauses.append(
            {
                "round": round_index,
                "seconds": 0.0 if reason else round(run.seconds, 6),
                "nonblocking_reason": reason,
            }
        )
        if run.interrupted:
            raise CollectorFailure(
                "interrupted (Ctrl-C)", kind=FailureKind.INTERRUPTED, files=files
            )
        if run.timed_out:
            raise CollectorFailure(f"py-spy timed out after {run.seconds:.0f}s", files=files)
        try:
            traces = json.loads(run.stdout or b"null")
        except json.JSONDecodeError:
            traces = None
        if not isinstance(traces, list):
            message = run.stderr.decode(errors="replace").strip().splitlines()
            first = next((line for line in message if line.strip()), "no output")
            cause = next((line.strip() for line in message if line.strip().startswith("0:")), "")
            reason = f"py-spy: {first} {cause}".strip()
            raise CollectorFailure(reason, kind=classify_failure(" ".join(message)), files=files)
        files += self._write_sources(target, traces, out)
        target.python_tids = _python_tids(traces, target.pid)
        return files

    def sample(self, target: Target, round_index: int, out: DumpWriter) -> list[str]:
        """One more dump, never pausing the target: a second look at where each thread
        stands, midway between two rounds."""
        if self.binary is None:
            raise CollectorFailure("py-spy is not installed", kind=FailureKind.TOOL_MISSING)
        run = self._dump(target.pid, True)
        if run.interrupted:
            raise CollectorFailure("interrupted (Ctrl-C)", kind=FailureKind.INTERRUPTED)
        if run.timed_out or not run.stdout.strip().startswith(b"["):
            text = run.stderr.decode(errors="replace").strip()[:200]
            raise CollectorFailure(f"py-spy: {text or 'no output'}")
        return [out.write_bytes(layout.pyspy_watch_file(target.pid, round_index), run.stdout)]

    @staticmethod
    def _write_sources(
        target: Target, traces: list[dict[str, object]], out: DumpWriter
    ) -> list[str]:
        """Keep the source lines above each frame, read through the target's own root.

        The analyzer needs them on another machine: which `with lock:` a thread waits
        at, and which enclosing `with` blocks it holds. They go to the capture's shared
        sources.json; lines that differ from it (another file at the same path) to the
        process's own.
        """
        new: dict[str, dict[str, str]] = {}
        read: dict[str, list[str]] = {}  # each file once per round, not once per frame
        for thread in traces:
            frames = thread.get("frames")
            for frame in frames if isinstance(frames, list) else []:
                if not isinstance(frame, dict):
                    continue
                filename, line = frame.get("filename"), frame.get("line")
                if not isinstance(filename, str) or not isinstance(line, int) or line <= 0:
                    continue
                if (filename, line) in target.source_lines:
                    continue
                if filename not in read:
                    read[filename] = _read_source(target.pid, filename)
                lines = read[filename]
                if line > len(lines):
                    continue  # not readable now (gone, or no access): tried again next round
                target.source_lines.add((filename, line))
                known = new.setdefault(filename, {})
                for number in range(max(1, line - SOURCE_CONTEXT), line + 1):
                    known[str(number)] = lines[number - 1].rstrip("\n")
        shared = out.add_sources(new, target.own_sources, target.read_lines)
        for filename, numbered in new.items():
            target.read_lines.setdefault(filename, set()).update(numbered)
        files = [shared] if shared else []
        # Its own lines changed only in a file of this round's lines that is now its own.
        if any(filename in target.own_sources for filename in new):
            files.append(out.write_json(layout.sources_file(target.pid), target.own_sources))
        return files


def _python_tids(traces: list[dict[str, object]], pid: int) -> list[int]:
    """The OS thread ids of a dump's Python threads, the main thread first."""
    tids = [
        t["os_thread_id"]
        for t in traces
        if isinstance(t, dict) and isinstance(t.get("os_thread_id"), int)
    ]
    ordered = sorted({int(tid) for tid in tids if isinstance(tid, int)}, key=lambda t: t != pid)
    return ordered


class NativeAllThreadsCollector:
    """Every thread's native frames (gRPC, Eigen pools), merged with Python frames."""

    name = "native"

    def __init__(self) -> None:
        self.pystack = find_tool("pystack")
        self.gdb = find_tool("gdb")

    def collect(self, target: Target, round_index: int, out: DumpWriter) -> list[str]:
        failures = []
        if _has_uninterruptible_thread(target.pid):
            # Native stacks need every thread stopped, and a thread in D never stops (pystack
            # refuses native frames with --no-block). The kernel stacks of D threads are in
            # procfs.json instead.
            raise CollectorFailure(
                "skipped: a thread is in uninterruptible I/O (state D), so native stacks "
                "cannot be read; its kernel stack is in procfs.json",
                kind=FailureKind.ERROR,
            )
        if self.pystack is not None:
            # Blocking mode, also for a stopped target: measured to leave it stopped.
            argv = [self.pystack, "remote", str(target.pid), "--native-all", "--no-color"]
            run = run_bounded(argv, PYSTACK_TIMEOUT)
            if not run.timed_out and run.returncode == 0 and run.stdout.strip():
                return [
                    out.write_bytes(
                        layout.native_file(target.pid, round_index, StackSource.PYSTACK),
                        run.stdout,
                    )
                ]
            if run.interrupted:
                raise CollectorFailure("interrupted (Ctrl-C)", kind=FailureKind.INTERRUPTED)
            text = (run.stderr or run.stdout).decode(errors="replace").strip()
            failures.append(f"pystack: {'timed out' if run.timed_out else text[:300]}")
        # gdb stops every thread to read it and resumes them on detach: never for a target
        # that is stopped (it would run until re-stopped) or has a thread in D (it hangs).
        if self.gdb is not None and not _stopped(target.state):
            # gdb resumes a stopped process on detach unless told otherwise: the capture
            # loop re-stops a target that was stopped (see capture.restore_stopped).
            run = run_bounded(
                [self.gdb, "-p", str(target.pid), "-batch", "-nx", "-ex", "thread apply all bt"],
                GDB_TIMEOUT,
            )
            if not run.timed_out and b"Thread " in run.stdout:
                return [
                    out.write_bytes(
                        layout.native_file(target.pid, round_index, StackSource.GDB), run.stdout
                    )
                ]
            failures.append(f"gdb: {'timed out' if run.timed_out else 'no threads printed'}")
        if not failures:
            raise CollectorFailure(
                "neither pystack nor gdb is installed", kind=FailureKind.TOOL_MISSING
            )
        raise CollectorFailure("; ".join(failures), kind=classify_failure(" ".join(failures)))
