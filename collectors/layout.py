"""The dump directory's one owner: its name, version, every path in it, and the words
its manifest uses for what each collector did.

Standard library only: capture writes with it on hosts without pandas, and the loader,
the evidence a finding cites, the tests' dump builder and the benchmarks' synthetic dumps
read with it. docs/dump-format.md describes the same layout for people.
"""

from __future__ import annotations

import enum

FORMAT_NAME = "postmortem-dump"
# 2: per-thread context switches, watch.json and pyspy.watch.json between rounds, log tail
# offsets and per-round --log sizes. 3: the flight recorder's file of each process that
# runs one. 5 (for dumps of thousands of processes): procfs.json holds its threads, files
# and sockets as columns ({"tid": [...], "name": [...]}) instead of one object each; the
# host's listening addresses are written by one process per network namespace and round
# (`netns` names it in every file); source lines are kept once for the capture in
# sources.json at the top, a process's own sources.json holding only lines that differ.
# Every earlier layout still loads (without what came after it).
SCHEMA_VERSION = 5
SUPPORTED_SCHEMA_VERSIONS = (1, 2, 3, 4, 5)  # 4: the top manifest of several hosts' dumps
MANIFEST = "manifest.json"


class CollectorStatus(str, enum.Enum):
    """What one collector did for one target (in one round)."""

    OK = "ok"
    FAILED = "failed"
    SKIPPED = "skipped"


class FailureKind(str, enum.Enum):
    """Why a collector failed: the capture's exit code and the analyzer read this, never
    the free-text reason."""

    NONE = ""
    ERROR = "error"
    PERMISSION = "permission"
    NOT_PYTHON = "not-python"
    EXITED = "exited"  # the process ended before or during the capture
    TOOL_MISSING = "tool-missing"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # Ctrl-C
    NO_ANSWER = "no-answer"  # a TF server was asked and did not answer
    CLIENT = "client"  # our own trace client failed before asking the server


class StackSource(str, enum.Enum):
    """The tools whose stacks a dump keeps, in the order a reader prefers them."""

    PYSPY = "pyspy"
    PYSTACK = "pystack"
    GDB = "gdb"


# -- paths, relative to the dump directory ----------------------------------------------


def process_dir(pid: int) -> str:
    return f"processes/{pid}"


def process_file(pid: int) -> str:
    return f"processes/{pid}/process.json"


def sources_file(pid: int) -> str:
    """The source lines of a process that differ from the capture's shared ones (schema 5),
    or all of its source lines (before)."""
    return f"processes/{pid}/sources.json"


SHARED_SOURCES = "sources.json"  # source lines around every frame of the capture (schema 5)


def std_stream_file(pid: int, stream: str) -> str:
    """Tail of a process's own stdout or stderr."""
    return f"processes/{pid}/logs/{stream}.txt"


def flight_file(pid: int) -> str:
    """A copy of the process's flight recorder file (postmortem.recorder), when it runs one."""
    return f"processes/{pid}/flight.json"


def round_name(round_index: int) -> str:
    return f"round-{round_index:03d}"


def round_index(name: str) -> int | None:
    """'round-002' or 'round-002.json' -> 2; None for any other name."""
    stem = name.split(".", 1)[0]
    prefix, _, number = stem.partition("-")
    if prefix != "round" or not number.isdigit():
        return None
    return int(number)


def round_dir(pid: int, round_index: int) -> str:
    return f"processes/{pid}/{round_name(round_index)}"


def procfs_file(pid: int, round_index: int) -> str:
    return f"{round_dir(pid, round_index)}/procfs.json"


def pyspy_file(pid: int, round_index: int) -> str:
    return f"{round_dir(pid, round_index)}/pyspy.json"


def pyspy_watch_file(pid: int, round_index: int) -> str:
    """An extra py-spy dump taken without pausing, midway through the watch after a round."""
    return f"{round_dir(pid, round_index)}/pyspy.watch.json"


def watch_file(pid: int, round_index: int) -> str:
    """Context switches of the watched threads between this round and the next."""
    return f"{round_dir(pid, round_index)}/watch.json"


def pyspy_stderr_file(pid: int, round_index: int) -> str:
    return f"{round_dir(pid, round_index)}/pyspy.stderr.txt"


NATIVE_FILES = {StackSource.PYSTACK: "native.pystack.txt", StackSource.GDB: "native.gdb.txt"}


def native_file(pid: int, round_index: int, source: StackSource) -> str:
    return f"{round_dir(pid, round_index)}/{NATIVE_FILES[source]}"


def checkpoint_dir(index: int) -> str:
    return f"checkpoint/{index}"


def checkpoint_file(index: int, round_index: int) -> str:
    return f"{checkpoint_dir(index)}/{round_name(round_index)}.json"


def tf_dir(index: int) -> str:
    return f"tf/{index}"


def tf_events_file(index: int) -> str:
    return f"{tf_dir(index)}/events.json"


def extra_log_file(index: int, name: str) -> str:
    """Tail of a --log file."""
    return f"logs/{index}-{name}"
