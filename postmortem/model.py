"""The incident model: everything the analysis found in one dump, as frozen records.

Analysis (`postmortem.analyze`) builds one `Incident`; every renderer (text, JSON, the
HTML report, speedscope, folded, chrome-trace) draws from it and computes nothing of its
own. Standard library only: a script, a notebook or a renderer imports it without pandas.
`--json` is its one serialization (`postmortem.serialize`, docs/incident-json.md).

Conventions: times are Unix seconds (`Seconds`) unless a name ends in `_s` (a duration);
a `Role` is "ps:0", "worker:1", "chief:0", or "pid:123" when the dump names no role; every
stack lists its frames innermost first, as py-spy prints them.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field

from collectors.layout import CollectorStatus, FailureKind, StackSource

Seconds = float
Bytes = int
Role = str
Confidence = float  # 0..1

__all__ = [
    "Bytes",
    "CaptureProblem",
    "CaptureRound",
    "CheckpointFile",
    "CheckpointProgress",
    "CollectorStatus",
    "Confidence",
    "Culprit",
    "DumpInfo",
    "Evidence",
    "FailureKind",
    "Finding",
    "FlightRecord",
    "Frame",
    "HangClass",
    "Incident",
    "LoadProblem",
    "LogEvent",
    "LogKind",
    "LogProgress",
    "LogSummary",
    "Member",
    "Outlier",
    "Process",
    "RecordedSave",
    "RecordedStall",
    "RecordedStep",
    "RecordedVariable",
    "Risk",
    "Role",
    "SaveCadence",
    "Seconds",
    "Stack",
    "StackClass",
    "StackNode",
    "StackSample",
    "StackSource",
    "Status",
    "Strategy",
    "StepPoint",
    "StepSeries",
    "TfEvent",
    "TfEventKind",
    "Thread",
    "ThreadGroup",
    "Timeline",
    "TracedOp",
    "TracedStep",
    "Transfer",
    "Verdict",
    "WaitEdge",
    "WaitKind",
    "Waiter",
]


PID_BITS = 22  # Linux pids are below 2**22; in a dump of several hosts, host N's keys are
# N << 22 | pid, so every process has a key of its own


def os_pid(key: int) -> int:
    """The pid a process has on its own host, from its key in the incident."""
    return key & ((1 << PID_BITS) - 1)


class HangClass(str, enum.Enum):
    """What the verdict says happened. docs/hang-classes.md explains each."""

    OVERSIZED_TENSOR_TRANSFER = "oversized-tensor-transfer"
    PEER_UNRESPONSIVE = "peer-unresponsive"
    STORAGE_STALL = "storage-stall"
    TRAINING_STALLED = "training-stalled"
    LOCK_DEADLOCK = "lock-deadlock"
    # TF2 MultiWorkerMirroredStrategy: members wait in a collective another never joins
    COLLECTIVE_MISMATCH = "collective-mismatch"
    PEER_UNREACHABLE = "peer-unreachable"
    SAVE_PROGRESSING = "save-progressing"
    DEGRADED = "degraded"  # a member is stopped or dead, but training goes on without it
    HEALTHY = "healthy"  # training advances; nothing is stuck
    NO_HANG_FOUND = "no-hang-found"  # cannot tell

    @property
    def is_hang(self) -> bool:
        return self not in (
            HangClass.SAVE_PROGRESSING,
            HangClass.DEGRADED,
            HangClass.HEALTHY,
            HangClass.NO_HANG_FOUND,
        )


class Strategy(str, enum.Enum):
    """How the job distributes its work (docs/hang-classes.md)."""

    V1 = "compat.v1"  # ps/worker graphs and sessions (replica_device_setter)
    MWMS = "MultiWorkerMirroredStrategy"
    PSS = "ParameterServerStrategy"
    UNKNOWN = ""


class Status(str, enum.Enum):
    """What a thread did over the capture, most telling first."""

    STUCK = "stuck"  # same place in every sample, waiting on something, never woke
    BUSY = "busy"  # using CPU
    STOPPED = "stopped"  # its process is stopped (SIGSTOP, a debugger)
    ACTIVE = "active"  # waits in calls that keep returning: it wakes, it makes progress
    PARKED = "parked"  # waiting for work: a timer, a queue, sleep
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return _STATUS_RANK[self]


_STATUS_RANK = {status: index for index, status in enumerate(Status)}  # most telling first


class WaitKind(str, enum.Enum):
    """What a waiting thread waits on, read from its stack and source line."""

    NONE = ""
    SESSION_RUN = "session-run"
    SESSION_CREATE = "session-create"
    LOCK = "lock"
    JOIN = "join"
    QUEUE = "queue"
    IO = "io"
    SLEEP = "sleep"
    SERVE = "serve"  # a ps main thread in Server.join: serving, healthy
    COLLECTIVE = "collective"  # inside a collective (all-reduce, all-gather) of a TF2 strategy
    TF_OP = "tf-op"  # inside an eager op or a tf.function call: TF2's session.run


class LogKind(str, enum.Enum):
    ERROR = "error"
    WAITING = "waiting"  # "CreateSession still waiting ..."
    SAVE = "save"
    STEP = "step"


class TfEventKind(str, enum.Enum):
    CHECKPOINT_OP = "checkpoint op"
    TRANSFER = "transfer"
    OP = "TF op"


# -- stacks -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    filename: str = ""
    line: int = 0
    code: str = ""  # the source line, when the capture kept it
    native: bool = False

    @property
    def short_file(self) -> str:
        return self.filename.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """'Saver.save (saver.py:1300)'."""
        if not self.filename:
            return self.function
        where = f"{self.short_file}:{self.line}" if self.line else self.short_file
        return f"{self.function} ({where})"


@dataclass(frozen=True, slots=True)
class Stack:
    """One thread's frames at one moment, innermost first."""

    frames: tuple[Frame, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.frames)

    def __len__(self) -> int:
        return len(self.frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self.frames)

    @property
    def innermost(self) -> Frame | None:
        return self.frames[0] if self.frames else None

    def root_first(self) -> tuple[Frame, ...]:
        return self.frames[::-1]

    def functions(self) -> tuple[str, ...]:
        return tuple(f.function for f in self.frames)


@dataclass(frozen=True, slots=True)
class StackSample:
    """One thread's stack in one round, from one tool."""

    pid: int
    tid: int
    thread_name: str
    round: int
    source: StackSource
    stack: Stack
    sample: int = 0  # 0: the round's own dump; 1: the look between this round and the next


@dataclass(frozen=True, slots=True)
class StackClass:
    """Threads across processes that stand at the same Python stack (STAT-style)."""

    stack: Stack
    threads: tuple[tuple[int, int], ...]  # (pid, tid)
    processes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class StackNode:
    """A node of the merged stack tree: one frame reached through one path from the root;
    `frame` is None at the root."""

    frame: Frame | None
    threads: tuple[str, ...]  # "MainThread (worker:0)" for each thread through this node
    processes: tuple[int, ...]
    status: Status  # the most telling status of those threads
    children: tuple[StackNode, ...] = ()

    def walk(self) -> Iterator[tuple[StackNode, StackNode | None]]:
        """(node, parent) breadth first."""
        queue: list[tuple[StackNode, StackNode | None]] = [(self, None)]
        while queue:
            node, parent = queue.pop(0)
            yield node, parent
            queue.extend((child, node) for child in node.children)


# -- the cluster --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Member:
    """A task of the cluster spec, or a captured process that no spec names."""

    role: Role
    job: str
    task: int
    address: str | None
    pid: int | None  # None: not in the dump (dead, never started, or not captured)
    host: str
    problems: tuple[str, ...] = ()  # why it cannot answer, in words
    problems_source: str = ""  # the dump file they were read from
    # Its place in a MultiWorkerMirroredStrategy collective group (chief and workers of a job
    # that runs collectives): "inside" (a thread in a collective), "outside" (seen, none
    # inside), "unseen" (no stack read); "" when the job runs no collective or it is no member.
    collective: str = ""
    # Its host could not be captured (capture --host): why, in ssh's words. Absent from the
    # dump then says nothing about it.
    not_captured: str = ""

    @property
    def captured(self) -> bool:
        return self.pid is not None

    @property
    def unresponsive(self) -> bool:
        return bool(self.problems)


@dataclass(frozen=True, slots=True)
class Process:
    pid: int
    role: Role
    host: str
    comm: str
    exe: str
    cwd: str
    cmdline: tuple[str, ...]
    python: bool | None
    tensorflow: bool | None
    states: str  # kernel state letter per round, e.g. "TTT"
    exited: bool = False  # it ended before or during the capture
    rss_bytes: Bytes | None = None  # the largest seen

    @property
    def label(self) -> str:
        """'worker:0 (pid 123)', or 'python (pid 123)' when no role is known."""
        if self.role and not self.role.startswith("pid:"):
            return f"{self.role} (pid {os_pid(self.pid)})"
        return f"{self.comm or 'process'} (pid {os_pid(self.pid)})"


def thread_family(name: str) -> str:
    """A thread name without its trailing number: tf_Eigen12 -> tf_Eigen (how alike
    threads are told apart from the rest, in ThreadGroup and in a report of many)."""
    return name.rstrip("0123456789-_/ ") or name


@dataclass(frozen=True, slots=True)
class Thread:
    pid: int
    tid: int
    name: str
    role: Role
    status: Status
    waits_on: WaitKind
    states: str  # kernel state letter per round seen, e.g. "SSS"; "" when not read
    wchan: str
    cpu_seconds: float
    elapsed_s: float
    python: bool  # py-spy saw it (a Python thread)
    stack: Stack  # its Python stack in the last round that saw it
    native_stack: Stack = Stack()
    lock_expr: str = ""  # the lock a lock waiter stands at
    in_save: bool = False
    same_stack: bool = True
    kernel_stack: tuple[str, ...] = ()  # for a thread in D, where in the kernel it waits
    state_rounds: tuple[int, ...] = ()  # the round each letter of `states` was read in
    # Between rounds the capture watched it (no ptrace, no pause): for how long, how many
    # times it woke (voluntary context switches), and per round.
    watched_s: float = 0.0
    wakeups: int | None = None  # None: not watched (a dump before schema 2)
    wakeups_by_round: tuple[tuple[int, int], ...] = ()  # (round, wakeups after it)
    samples: int = 0  # stack samples of it (py-spy, each round and between rounds)
    decided_by: str = ""  # the evidence its status rests on, in words

    @property
    def label(self) -> str:
        return f"{self.name} (tid {self.tid})"

    @property
    def family(self) -> str:
        return thread_family(self.name)

    @property
    def wake_rate(self) -> float | None:
        """Wakeups per second watched; None when it was not watched."""
        if self.wakeups is None or self.watched_s <= 0:
            return None
        return self.wakeups / self.watched_s

    @property
    def kernel_states(self) -> tuple[tuple[int, str], ...]:
        """(round, state letter) of every round that read the thread."""
        return tuple(zip(self.state_rounds, self.states, strict=False))


@dataclass(frozen=True, slots=True)
class ThreadGroup:
    """Threads of one process that the capture cannot tell apart: no stack, the same name
    family, status and kernel state in every round (a pool's idle workers, gRPC pollers).
    Kept as one record so a 1,000-process dump stays readable."""

    pid: int
    role: Role
    family: str  # the name without its trailing number: "tf_Eigen"
    status: Status
    tids: tuple[int, ...]
    wchan: str
    states: str = ""
    state_rounds: tuple[int, ...] = ()

    @property
    def count(self) -> int:
        return len(self.tids)

    @property
    def kernel_states(self) -> tuple[tuple[int, str], ...]:
        return tuple(zip(self.state_rounds, self.states, strict=False))


@dataclass(frozen=True, slots=True)
class Waiter:
    role: Role
    why: str  # what it waits in, e.g. "session.run in MainThread (tid 12)"


@dataclass(frozen=True, slots=True)
class WaitEdge:
    """Wait-for edges: each waiter waits on every member of `waits_on`. Waiters one after
    the other that wait on the very same members are one entry (the single edges keep the
    analysis's order): every worker of a ps job waits on every ps, which is 4.75 million
    single edges at 9,500 workers and 500 ps."""

    waiters: tuple[Waiter, ...]
    waits_on: tuple[Role, ...]

    @property
    def count(self) -> int:
        """How many single edges (waiter -> member) this stands for."""
        return len(self.waiters) * len(self.waits_on)

    def pairs(self) -> Iterator[tuple[Role, Role, str]]:
        """The single edges (waiter, waited-for, why), waiter by waiter."""
        for waiter in self.waiters:
            for target in self.waits_on:
                yield waiter.role, target, waiter.why


@dataclass(frozen=True, slots=True)
class Outlier:
    role: Role
    why: str


# -- over time ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureRound:
    index: int
    started_at: Seconds
    ended_at: Seconds


@dataclass(frozen=True, slots=True)
class LogEvent:
    """A log line worth a mark on a timeline."""

    pid: int | None  # None for a --log file
    role: Role
    stream: str  # "stderr", "stdout", or the --log file's path
    track: str  # where a timeline draws it: "worker:0 (pid 12) stderr"
    line_no: int
    text: str
    kind: LogKind
    time: Seconds | None  # None when neither a timestamp nor the capture can place it
    estimated: bool = False  # no timestamp: placed between the capture rounds around it


@dataclass(frozen=True, slots=True)
class TfEvent:
    """One event of a TF profiler trace."""

    address: str
    pid: int | None  # the process that listens there, when the dump holds it
    track: str
    plane: str
    line: str
    name: str
    node: str
    op: str
    kind: TfEventKind
    start: Seconds
    duration_s: float


@dataclass(frozen=True, slots=True)
class StepPoint:
    time: Seconds | None
    step: int
    estimated: bool = False  # the line has no timestamp: placed between capture rounds


@dataclass(frozen=True, slots=True)
class StepSeries:
    """The steps one process logged, in order."""

    role: Role
    pid: int | None
    track: str  # the log it was read from, as timelines name it
    points: tuple[StepPoint, ...]

    @property
    def last_step(self) -> int | None:
        return self.points[-1].step if self.points else None


@dataclass(frozen=True, slots=True)
class Timeline:
    rounds: tuple[CaptureRound, ...] = ()
    log_events: tuple[LogEvent, ...] = ()
    tf_events: tuple[TfEvent, ...] = ()
    steps: tuple[StepSeries, ...] = ()
    tf_events_without_time: int = 0
    step_lines_omitted: int = 0  # step lines left out of log_events (kept in `steps`)

    @property
    def untimed_log_events(self) -> int:
        return sum(1 for e in self.log_events if e.time is None)


@dataclass(frozen=True, slots=True)
class LogProgress:
    """How one process's training moved during the capture, from its log (or from the
    steps its flight recorder wrote down: `recorded`)."""

    role: Role
    pid: int | None
    source: str  # the dump file the lines are in
    steps_in_window: int  # steps it advanced while the capture watched
    step_lines_in_window: int
    rate: float | None  # steps per second in the window (or as TensorFlow logged it)
    last_step: int | None
    # from its last step line to the capture's end (recorded: to the file's last write)
    last_step_age_s: float | None
    interval_s: float | None  # typical time between its step lines
    window_s: float
    recorded: bool = False  # from its flight recorder's steps, not from a log

    @property
    def moved(self) -> bool:
        return self.steps_in_window > 0


@dataclass(frozen=True, slots=True)
class SaveCadence:
    """When checkpoints are written, from the .index files a checkpoint directory keeps."""

    dir: str
    saves: int
    last_save_age_s: float | None  # from the newest checkpoint to the capture's end
    interval_s: float | None  # typical time between two checkpoints
    during_capture: int  # checkpoints written while the capture ran


@dataclass(frozen=True, slots=True)
class LogSummary:
    role: Role
    last_step: int | None
    save_lines: int
    saves_after_last_step: int
    errors: tuple[str, ...]
    create_session_waits: tuple[str, ...]


# -- checkpoints ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointFile:
    name: str
    sizes: tuple[Bytes | None, ...]  # per round of the directory (None: absent that round)


@dataclass(frozen=True, slots=True)
class CheckpointProgress:
    """A watched checkpoint directory across the rounds."""

    dir: str
    rounds: tuple[int, ...]
    times: tuple[Seconds, ...]
    sizes: tuple[Bytes, ...]  # all files, per round
    temp_sizes: tuple[Bytes, ...]  # in-progress files (*_temp*, *.tempstate*), per round
    timed_out_rounds: tuple[int, ...]  # rounds whose listing did not return
    last_checkpoint: str  # from the `checkpoint` state file
    files: tuple[CheckpointFile, ...] = ()  # the largest files, with sizes per round
    exists: bool | None = None

    @property
    def growing(self) -> bool:
        return len(self.sizes) > 1 and self.sizes[-1] > self.sizes[0]

    @property
    def temp_growing(self) -> bool:
        return len(self.temp_sizes) > 1 and self.temp_sizes[-1] > self.temp_sizes[0]

    @property
    def timed_out(self) -> bool:
        return bool(self.timed_out_rounds)


# -- what could not be read -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaptureProblem:
    """A collector that did not succeed, as the capture recorded it."""

    target: str
    collector: str
    status: CollectorStatus
    round: int | None
    reason: str
    kind: FailureKind


@dataclass(frozen=True, slots=True)
class LoadProblem:
    """A file of the dump the loader could not use."""

    file: str
    problem: str


# -- the verdict ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evidence:
    """One fact behind a finding, and the dump file a person can check it in."""

    what: str
    source: str  # a path inside the dump (manifest.json, processes/12/round-002/pyspy.json)
    process: str = ""  # the role (or label) the fact is about


@dataclass(frozen=True, slots=True)
class Culprit:
    role: Role | None
    pid: int | None  # None when the process is absent from the dump
    host: str | None
    state: str = ""  # what is wrong with it, in words


@dataclass(frozen=True, slots=True)
class Finding:
    hang_class: HangClass
    confidence: Confidence
    summary: str
    fix: str
    culprit: Culprit | None = None
    blocking_op: str = ""
    evidence: tuple[Evidence, ...] = ()
    # Set when the ranking decided another finding explains this one (a symptom of it).
    explained_by: HangClass | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    finding: Finding  # the top one
    findings: tuple[Finding, ...]  # every finding, ranked; the first is `finding`

    @property
    def hang_class(self) -> HangClass:
        return self.finding.hang_class

    @property
    def culprit(self) -> Culprit | None:
        return self.finding.culprit


# -- the whole ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DumpInfo:
    """Where the facts came from: the dump and the capture that wrote it."""

    path: str
    name: str
    host: str
    started_at: Seconds | None
    ended_at: Seconds | None
    complete: bool
    interrupted: bool
    command: tuple[str, ...]
    options: tuple[tuple[str, str], ...]
    tool_version: str
    schema_version: int
    processes_in_manifest: int  # targets the manifest lists
    processes_loaded: int  # of those, the ones the loader could read


# -- the flight recorder (postmortem.recorder), as the job recorded itself ---------------------


@dataclass(frozen=True, slots=True)
class RecordedStep:
    """One session.run the recorder saw (a training step)."""

    started: Seconds
    seconds: float | None  # None: still running when the recorder last wrote
    global_step: int | None
    traced: bool  # recorded with RunOptions(trace_level=FULL_TRACE)


@dataclass(frozen=True, slots=True)
class TracedOp:
    """One node of a traced step (RunMetadata step_stats), on one device."""

    device: str  # "/job:ps/replica:0/task:0/device:CPU:0"
    role: Role | None  # "ps:0", from the device
    node: str
    op: str
    start: Seconds
    duration_s: float
    label: str  # TensorFlow's timeline label
    bytes: Bytes | None = None  # a RecvTensor transfer's size
    source_device: str = ""  # where a RecvTensor transfer came from


@dataclass(frozen=True, slots=True)
class TracedStep:
    global_step: int | None
    started: Seconds
    ended: Seconds
    ops: tuple[TracedOp, ...]
    ops_omitted: int = 0  # the shortest ops, left out past the model's bound

    @property
    def devices(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(op.device for op in self.ops))


@dataclass(frozen=True, slots=True)
class Transfer:
    """RecvTensor transfers of the traced steps, from one device to another."""

    source_device: str
    destination_device: str
    count: int
    total_bytes: Bytes
    largest_bytes: Bytes
    largest_edge: str  # the label of the largest one


@dataclass(frozen=True, slots=True)
class RecordedSave:
    began: Seconds
    ended: Seconds | None  # None: it had not ended when the recorder last wrote
    seconds: float | None  # how long it took; for one that has not ended, so far (to the
    # capture's end)
    global_step: int | None
    path: str


@dataclass(frozen=True, slots=True)
class RecordedStall:
    """The recorder's watchdog: a step or a save that lasted past its threshold."""

    what: str  # "step" or "save"
    began: Seconds
    reported: Seconds
    last_step: int | None
    capture: str = ""  # the dump an auto_capture started, when one did


@dataclass(frozen=True, slots=True)
class RecordedVariable:
    name: str
    shape: str  # "1024x1024"
    dtype: str
    bytes: Bytes | None
    device: str
    role: Role | None


@dataclass(frozen=True, slots=True)
class FlightRecord:
    """What one process recorded about itself before and during the hang."""

    pid: int
    role: Role
    source: str  # the dump file
    started: Seconds | None
    written: Seconds | None  # its last write: a frozen process stops writing
    steps: tuple[RecordedStep, ...]
    typical_step_s: float | None  # the median of its recent steps
    steps_stopped: Seconds | None  # when its last step ended, if no step ended after it
    # in the window (or the capture's end) and one had been expected since
    running_step: RecordedStep | None  # begun and not ended
    saves: tuple[RecordedSave, ...]
    stalls: tuple[RecordedStall, ...]
    traces: tuple[TracedStep, ...]  # the last traced steps, oldest first
    transfers: tuple[Transfer, ...]  # largest first
    variables: tuple[RecordedVariable, ...]  # largest first (bounded)
    variable_count: int
    variable_bytes: Bytes
    saver_sharded: bool | None  # None: no saver recorded
    saver_devices: tuple[str, ...]
    sync_replicas: bool | None
    replicas_to_aggregate: int | None
    operation_timeout_ms: int | None  # 0: a session.run may wait forever
    auto_captures: tuple[str, ...] = ()

    @property
    def open_save(self) -> RecordedSave | None:
        return next((s for s in reversed(self.saves) if s.ended is None), None)

    @property
    def last_trace(self) -> TracedStep | None:
        return self.traces[-1] if self.traces else None


@dataclass(frozen=True, slots=True)
class Risk:
    """Something that will hang or hurt this job, though it may not have yet."""

    what: str
    fix: str
    source: str  # the dump file that shows it
    process: Role = ""


@dataclass(frozen=True, slots=True)
class Incident:
    dump: DumpInfo
    verdict: Verdict
    members: tuple[Member, ...] = ()
    processes: tuple[Process, ...] = ()
    threads: tuple[Thread, ...] = ()  # every thread with a stack, and every stuck or busy one
    thread_groups: tuple[ThreadGroup, ...] = ()  # the others, alike ones together
    wait_for: tuple[WaitEdge, ...] = ()
    wait_for_sinks: tuple[Role, ...] = ()
    outliers: tuple[Outlier, ...] = ()
    stack_classes: tuple[StackClass, ...] = ()
    stack_samples: tuple[StackSample, ...] = ()
    stack_tree: StackNode | None = None  # last round of every thread, from `tree_source`
    tree_source: StackSource | None = None
    timeline: Timeline = field(default_factory=Timeline)
    checkpoints: tuple[CheckpointProgress, ...] = ()
    progress: tuple[LogProgress, ...] = ()  # each log's steps during the capture
    saves: tuple[SaveCadence, ...] = ()  # each checkpoint directory's cadence
    window: tuple[Seconds, Seconds] | None = None  # the capture: first round to its end
    logs: tuple[LogSummary, ...] = ()
    capture_problems: tuple[CaptureProblem, ...] = ()
    load_problems: tuple[LoadProblem, ...] = ()
    flights: tuple[FlightRecord, ...] = ()  # from processes that run the flight recorder
    risks: tuple[Risk, ...] = ()
    strategy: Strategy = Strategy.UNKNOWN  # how the job distributes, read from the dump
    strategy_evidence: str = ""  # what showed it, in words

    def process(self, pid: int) -> Process | None:
        return next((p for p in self.processes if p.pid == pid), None)

    @property
    def wait_edge_count(self) -> int:
        """Single wait-for edges (waiter -> member), over every entry of `wait_for`."""
        return sum(e.count for e in self.wait_for)

    def role_of(self, pid: int) -> Role:
        found = self.process(pid)
        return found.role if found is not None else f"pid:{pid}"

    def process_labels(self) -> dict[int, str]:
        return {p.pid: p.label for p in self.processes}

    def status_counts(self, pid: int | None = None) -> dict[Status, int]:
        """Threads per status, of one process or of all, groups included."""
        by_pid = self.status_counts_by_pid()
        if pid is not None:
            return by_pid.get(pid, {})
        counts: dict[Status, int] = {}
        for mine in by_pid.values():
            for status, n in mine.items():
                counts[status] = counts.get(status, 0) + n
        return counts

    def status_counts_by_pid(self) -> dict[int, dict[Status, int]]:
        """`status_counts` of every process at once (one pass, for thousands of them)."""
        counts: dict[int, dict[Status, int]] = {}
        for t in self.threads:
            mine = counts.setdefault(t.pid, {})
            mine[t.status] = mine.get(t.status, 0) + 1
        for g in self.thread_groups:
            mine = counts.setdefault(g.pid, {})
            mine[g.status] = mine.get(g.status, 0) + g.count
        return counts

    def stack_sources(self) -> tuple[StackSource, ...]:
        present = {s.source for s in self.stack_samples}
        return tuple(s for s in StackSource if s in present)
