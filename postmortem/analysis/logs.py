"""What the logs say: TensorFlow's error signatures, save and step lines, their times.

Every log pattern the analyzer knows is written here once. `log_facts` reads each
process's log for the rules; `log_events` picks the lines worth a mark on a timeline;
`step_series` follows the steps each process logged.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass, field
from datetime import datetime

from postmortem.analysis.roles import role_from_device
from postmortem.model import LogEvent, LogKind, Seconds, StepPoint, StepSeries

OVERSIZED = re.compile(
    r"(Cannot encode a Tensor that exceeds the 2GB protobuf limit|exceeds the 2GB protobuf|"
    r"Failed to encode tensor to byte buffer|larger than 2GB|message of size \d+ exceeds|"
    r"Received message larger than max)",
    re.IGNORECASE,
)
EXCEEDED_BYTES = re.compile(r"Exceeded bytes: (\d+)")
RENDEZVOUS = re.compile(r"rendezvous_key: (/job:[^;]+);[^;]*;(/job:[^;]+);([^;]+);")
REMOTE_TARGET = re.compile(r"from remote target (/job:[\w-]+/replica:\d+/task:\d+)")
TASK = re.compile(r"/job:[\w-]+/replica:\d+/task:\d+")
# TF2 runtimes that declare a task lost: MultiWorkerMirroredStrategy's coordination service
# (heartbeats; it names the tasks on this line or the next), ParameterServerStrategy's
# ClusterCoordinator (a ps; a worker).
HEARTBEAT_LOST = re.compile(r"tasks are unhealthy \(stopped sending heartbeats\)")
PS_FAILURE = re.compile(r"Parameter server failure detected at PS task (\d+)")
WORKER_FAILED = re.compile(r"Worker (/job:[\w-]+/replica:\d+/task:\d+) failed with")
# ...and a preempted PSS worker that came back (the coordinator goes on with it).
WORKER_RECOVERED = re.compile(r"Worker (/job:[\w-]+/replica:\d+/task:\d+) has been recovered")
BARE_TASK = re.compile(r"^\s*(/job:[\w-]+/replica:\d+/task:\d+)\s*,?\s*$")
# A collective whose members disagree (MultiWorkerMirroredStrategy): one ran a collective the
# others did not, and the others' next one had another shape. TF aborts every member.
COLLECTIVE_SHAPE_MISMATCH = re.compile(
    r"Shape mismatch in the collective instance (\d+)\.?(?: Op at device (\S+) expected shape "
    r"(\[[^\]]*\]) but another member in the group expected shape (\[[^\]]*\]))?"
)
# The op an eager TF error names last: a collective op run eagerly ("[Op:CollectiveReduceV2]",
# outside any tf.function: a save, strategy.reduce) or a function ("[Op:__inference_...]").
FAILED_OP = re.compile(r"\[Op:([\w.-]+)\]")
# MultiWorkerMirroredStrategy says who the process is: "task_type = 'worker', task_id = 1".
OWN_TASK = re.compile(r"task_type = '([\w-]+)', task_id = (\d+)")
CREATE_SESSION_WAIT = re.compile(
    r"CreateSession still waiting for response from worker: (/job:[\w-]+/replica:\d+/task:\d+)"
)
GRPC_UNREACHABLE = re.compile(
    r"(failed to connect to all addresses|Connection refused|UnavailableError|"
    r"Socket closed|Connection reset by peer|DNS resolution failed)",
    re.IGNORECASE,
)
SAVE_LINE = re.compile(
    r"(Saving checkpoints? (for \d+ )?(in)?to|Saving checkpoint to path|saving model to)",
    re.IGNORECASE,
)
SAVE_TRACEBACK = re.compile(
    r'(?:saver|checkpoint|checkpoint_management)\.py", line \d+, in (?:save|_write)\b'
)
# A step line names a step; "step" alone in prose ("stepping") must not count.
STEP_LINE = re.compile(r"\b(?:global[_ ]step|step)\b\s*[:=#]?\s*(\d+)", re.IGNORECASE)
GLOBAL_STEP = re.compile(r"\bglobal[_ ]step\b\s*[:=#]?\s*(\d+)", re.IGNORECASE)
# "Saving checkpoints for 300 into ...": the step a CheckpointSaverHook saves at.
SAVE_STEP = re.compile(r"Saving checkpoints? for (\d+)", re.IGNORECASE)
# tf.logging's StepCounterHook: "global_step/sec: 12.5"; Keras-style "steps/sec: 3.1".
STEP_RATE = re.compile(r"\b(?:global_step|steps?)/sec(?:ond)?\s*[:=]\s*([0-9]*\.?[0-9]+)", re.I)
ERROR_LINE = re.compile(
    r"\b(?:ERROR|CRITICAL|FATAL)\b|^[EF]\d{4} |Traceback \(most recent call last\)|"
    r"\b\w*(?:Error|Exception):"
)
# 2024-05-01 12:00:00,123 (Python logging) / 2024-05-01 12:00:00.123456: (TF C++)
ISO_TIME = re.compile(r"^\[?(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:[,.](\d{1,9}))?")
# I0501 12:00:00.123456 (absl / glog): no year, taken from the capture.
GLOG_TIME = re.compile(r"^[IWEF](\d{2})(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def _scoped(pattern: re.Pattern[str]) -> str:
    flags = "i" if pattern.flags & re.IGNORECASE else ""
    return f"(?{flags}:{pattern.pattern})" if flags else f"(?:{pattern.pattern})"


# Any pattern but the step line: most lines of a training log match none of them, and one
# search then stands for the many (a 1,000-process dump holds ~50,000 log lines).
NOTABLE = re.compile(
    "|".join(
        _scoped(p)
        for p in (
            OVERSIZED,
            GRPC_UNREACHABLE,
            ERROR_LINE,
            CREATE_SESSION_WAIT,
            SAVE_LINE,
            REMOTE_TARGET,
            SAVE_TRACEBACK,
            HEARTBEAT_LOST,
            PS_FAILURE,
            WORKER_FAILED,
            WORKER_RECOVERED,
            COLLECTIVE_SHAPE_MISMATCH,
        )
    ),
    re.MULTILINE,
)


# Lowercase words one of which every NOTABLE line contains: a substring test is ~20x
# cheaper than the regex, and most lines of a training log contain none of them.
NOTABLE_WORDS = (
    "error",
    "exception",
    "fatal",
    "critical",
    "traceback",
    "2gb",
    "encode",
    "message of size",
    "larger than max",
    "connect",
    "unavailable",
    "socket closed",
    "dns resolution",
    "createsession",
    "saving checkpoint",
    "saving model to",
    "remote target",
    "saver.py",
    "checkpoint.py",
    "checkpoint_management.py",
    "heartbeat",
    "parameter server failure",
    "failed with",
    "has been recovered",
    "shape mismatch",
)


# Each log line goes through notable/step_of/classify_line from several readers (the rules'
# log facts, the timeline, the steps): each answer is kept for the next one.
LINE_CACHE = 1 << 18


def clear_line_caches() -> None:
    for cached in (notable, step_of, classify_line):
        cached.cache_clear()


def _glog_error_start(text: str) -> bool:
    return len(text) > 5 and text[0] in "EF" and text[1:5].isdigit()


@functools.lru_cache(maxsize=LINE_CACHE)
def notable(text: str) -> bool:
    """Whether any pattern but the step line can match: NOTABLE.search, made cheap."""
    if _glog_error_start(text) or ("\n" in text and any(map(_glog_error_start, text.split("\n")))):
        return bool(NOTABLE.search(text))  # a glog E/F line: "^[EF]\d{4} " (per line)
    lowered = text.lower()
    return any(word in lowered for word in NOTABLE_WORDS) and bool(NOTABLE.search(text))


@dataclass
class LogFacts:
    """One process's (or one --log file's) log, read for the rules."""

    role: str
    pid: int | None
    source: str  # the dump file it was read from
    lines: list[str]
    save_lines: list[int] = field(default_factory=list)  # line numbers
    step_values: list[tuple[int, int]] = field(default_factory=list)  # (line number, step)
    oversized: list[str] = field(default_factory=list)
    create_session_waits: list[str] = field(default_factory=list)  # device strings waited for
    grpc_errors: list[str] = field(default_factory=list)
    # Remote tasks named by gRPC errors that say they could not be reached, with counts.
    unreachable_targets: dict[str, int] = field(default_factory=dict)
    failed_saves: int = 0  # tracebacks through Saver.save
    # Tasks a TF2 runtime declared lost (device -> the line that says so).
    lost_tasks: dict[str, str] = field(default_factory=dict)
    own_task: str | None = None  # "worker:1", as the strategy's own log line names it
    collective_mismatch: str | None = None  # the first "Shape mismatch in the collective" line
    failed_ops: list[str] = field(default_factory=list)  # "[Op:NAME]" names, in order

    @property
    def task(self) -> str:
        """Whose log: the process's role, or the task the log names (a --log file)."""
        return self.own_task if self.role == "log" and self.own_task else self.role

    @property
    def mismatch_outside_function(self) -> bool | None:
        """After a collective shape mismatch: whether the op that failed ran eagerly, outside
        any tf.function (a collective run by a save or strategy.reduce, not by the step);
        None when the log names no failed op."""
        if self.collective_mismatch is None or not self.failed_ops:
            return None
        return not self.failed_ops[-1].startswith("__inference")

    @property
    def last_step(self) -> int | None:
        return self.step_values[-1][1] if self.step_values else None

    @property
    def saves_after_last_step(self) -> int:
        last_step_line = self.step_values[-1][0] if self.step_values else -1
        return sum(1 for n in self.save_lines if n > last_step_line)


def read_log(role: str, pid: int | None, source: str, lines: list[str]) -> LogFacts:
    facts = LogFacts(role, pid, source, lines)
    counted = False
    for number, text in enumerate(lines):
        if "[Op:" in text:
            facts.failed_ops.extend(FAILED_OP.findall(text))
        if facts.own_task is None and "task_type = '" in text:
            if match := OWN_TASK.search(text):
                facts.own_task = f"{match.group(1)}:{match.group(2)}"
        if not notable(text):
            if match := STEP_LINE.search(text):
                facts.step_values.append((number, int(match.group(1))))
            continue
        if SAVE_LINE.search(text):
            facts.save_lines.append(number)
        elif (match := STEP_LINE.search(text)) and "Saving" not in text:
            facts.step_values.append((number, int(match.group(1))))
        if OVERSIZED.search(text):
            facts.oversized.append(text)
        if match := CREATE_SESSION_WAIT.search(text):
            facts.create_session_waits.append(match.group(1))
        if GRPC_UNREACHABLE.search(text):
            facts.grpc_errors.append(text)
        # TF prints the remote task and the gRPC status on neighbouring lines.
        nearby = lines[max(0, number - 2) : number + 3]
        if (match := REMOTE_TARGET.search(text)) and any(
            GRPC_UNREACHABLE.search(near) for near in nearby
        ):
            device = match.group(1)
            facts.unreachable_targets[device] = facts.unreachable_targets.get(device, 0) + 1
        if "Traceback (most recent call last)" in text:
            counted = False  # one failed save per traceback, however many save frames
        if SAVE_TRACEBACK.search(text) and not counted:
            facts.failed_saves += 1
            counted = True
        _lost_tasks(facts, text, lines[number + 1 : number + 9])
        if facts.collective_mismatch is None and COLLECTIVE_SHAPE_MISMATCH.search(text):
            facts.collective_mismatch = text.strip()
    return facts


def _lost_tasks(facts: LogFacts, text: str, following: list[str]) -> None:
    if HEARTBEAT_LOST.search(text):
        named = TASK.findall(text.split("heartbeats", 1)[-1])
        if not named:  # the list follows, one bare task name per line
            for line in following:
                bare = BARE_TASK.match(line)
                if bare is None:
                    break
                named.append(bare.group(1))
        for device in named:
            facts.lost_tasks.setdefault(device, text.strip())
    elif match := PS_FAILURE.search(text):
        facts.lost_tasks.setdefault(f"/job:ps/replica:0/task:{match.group(1)}", text.strip())
    elif match := WORKER_FAILED.search(text):
        facts.lost_tasks.setdefault(match.group(1), text.strip())
    elif match := WORKER_RECOVERED.search(text):
        facts.lost_tasks.pop(match.group(1), None)  # it came back: not lost


def oversized_details(logs: list[LogFacts]) -> dict[str, object]:
    """What TensorFlow's 2 GB error names: devices, edge, variable, bytes, reporter."""
    details: dict[str, object] = {}
    for facts in logs:
        for text in facts.oversized:
            if m := RENDEZVOUS.search(text):
                details.setdefault("src_device", m.group(1))
                details.setdefault("dst_device", m.group(2))
                edge = m.group(3)
                variable = re.sub(r"^edge_\d+_", "", edge).split("/")[0]
                details.setdefault("variable", variable)
                details.setdefault("edge", edge)
            if m := EXCEEDED_BYTES.search(text):
                details.setdefault("exceeded_bytes", int(m.group(1)))
            if m := REMOTE_TARGET.search(text):
                details.setdefault("remote_target", m.group(1))
            details.setdefault("reported_by", facts.role)
            details.setdefault("source", facts.source)
            details.setdefault("line", text.strip()[:400])
    src = details.get("src_device") or details.get("remote_target")
    if isinstance(src, str):
        details["src_role"] = role_from_device(src)
    return details


# -- the timeline -----------------------------------------------------------------------------


@functools.lru_cache(maxsize=LINE_CACHE)
def step_of(text: str) -> int | None:
    """The training step a log line reports (the global step when it names one). A save
    line ("Saving checkpoints for 300") is not a step done: it may precede a save that
    never returns."""
    if SAVE_LINE.search(text):
        return None
    match = GLOBAL_STEP.search(text) or STEP_LINE.search(text)
    return int(match.group(1)) if match else None


def rate_of(text: str) -> float | None:
    """Steps per second a log line reports (StepCounterHook's global_step/sec)."""
    match = STEP_RATE.search(text)
    try:
        return float(match.group(1)) if match else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=LINE_CACHE)
def classify_line(text: str) -> LogKind | None:
    if not notable(text):
        return LogKind.STEP if STEP_LINE.search(text) else None
    if OVERSIZED.search(text) or GRPC_UNREACHABLE.search(text) or ERROR_LINE.search(text):
        return LogKind.ERROR
    if CREATE_SESSION_WAIT.search(text):
        return LogKind.WAITING
    if SAVE_LINE.search(text):
        return LogKind.SAVE
    if STEP_LINE.search(text):
        return LogKind.STEP
    return None


def parse_log_time(text: str, year: int) -> Seconds | None:
    """Unix time of a log line's leading timestamp, read as local time; None if absent."""
    return parse_log_time_cached(text, year, {})


def parse_log_time_cached(
    text: str, year: int, seconds: dict[tuple[str, ...], float]
) -> Seconds | None:
    """parse_log_time with a cache of whole seconds: lines logged in the same second share
    the costly local-time conversion."""
    match = ISO_TIME.match(text)
    if match:
        y, mo, d, h, mi, s, frac = match.groups()
    else:
        match = GLOG_TIME.match(text)
        if not match:
            return None
        mo, d, h, mi, s, frac = match.groups()
        y = str(year)
    key = (y, mo, d, h, mi, s)
    whole = seconds.get(key)
    if whole is None:
        try:
            whole = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s)).timestamp()
        except (ValueError, OverflowError, OSError):
            return None
        seconds[key] = whole
    fraction = float(f"0.{frac}") if frac else 0.0
    return whole + fraction


def capture_year(started_at: object) -> int:
    moment = float(started_at) if isinstance(started_at, (int, float)) else time.time()
    try:
        return datetime.fromtimestamp(moment).year
    except (OverflowError, OSError, ValueError):
        return datetime.now().year


@dataclass(frozen=True)
class LogLine:
    pid: int | None
    stream: str
    line_no: int
    text: str
    time: Seconds | None = None  # from its timestamp, or placed between capture rounds
    estimated: bool = False


def log_events(
    lines: list[LogLine], roles: dict[int, str], labels: dict[int, str]
) -> list[LogEvent]:
    """Log lines worth a mark on a timeline: errors, session waits, saves, steps."""
    events = []
    for line in lines:
        kind = classify_line(line.text)
        if kind is None:
            continue
        if line.pid is None:
            role, track = "log", f"log {line.stream}"
        else:
            role = roles.get(line.pid, f"pid:{line.pid}")
            track = f"{labels.get(line.pid, f'pid {line.pid}')} {line.stream}"
        events.append(
            LogEvent(
                line.pid,
                role,
                line.stream,
                track,
                line.line_no,
                line.text,
                kind,
                line.time,
                line.estimated,
            )
        )
    return events


def step_series(events: list[LogEvent]) -> list[StepSeries]:
    """Per process (or --log file), the steps it logged in order, with their times."""
    by_track: dict[str, list[StepPoint]] = {}
    first: dict[str, LogEvent] = {}
    for event in events:
        if event.kind is not LogKind.STEP:
            continue
        step = step_of(event.text)
        if step is None:
            continue
        by_track.setdefault(event.track, []).append(StepPoint(event.time, step, event.estimated))
        first.setdefault(event.track, event)
    return [
        StepSeries(first[track].role, first[track].pid, track, tuple(points))
        for track, points in by_track.items()
    ]


STEP_LINES_KEPT = (3, 20)  # first and last step lines of each log kept as events


def trim_steps(events: list[LogEvent]) -> tuple[list[LogEvent], int]:
    """Every event but the step lines in the middle of each log (the step series keeps
    their numbers and times): a long capture logs tens of thousands of them."""
    head, tail = STEP_LINES_KEPT
    by_track: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        if event.kind is LogKind.STEP:
            by_track.setdefault(event.track, []).append(index)
    dropped: set[int] = set()
    for indexes in by_track.values():
        dropped.update(indexes[head : max(head, len(indexes) - tail)])
    return [e for i, e in enumerate(events) if i not in dropped], len(dropped)
