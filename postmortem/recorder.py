"""A flight recorder for tf.compat.v1 jobs: step timelines recorded inside the job, kept
where `postmortem capture` finds them when a save or a step stalls.

A session.run that hangs never returns its RunMetadata, so the timeline of the step that
hung can only be the one recorded before it. The recorder keeps, in a bounded ring, every
step's wall time and global step, a full trace (`RunOptions(trace_level=FULL_TRACE)`) of
every Nth step (and the first ones), each save's begin and end, and at start the variable
inventory, the saver, SyncReplicasOptimizer settings and the session's deadlines. A
background thread writes it all atomically to the flight directory; a step never waits
for it. A watchdog writes a stall event when a step or a save lasts too long and, if asked,
starts `postmortem capture --discover` once per incident.

    from postmortem.recorder import FlightRecorder
    recorder = FlightRecorder(stall_after_s=120, auto_capture=True)
    with tf.compat.v1.train.MonitoredTrainingSession(..., hooks=[recorder.hook()]) as sess:
        ...  # the Scaffold's saver is watched: the CheckpointSaverHook's saves are recorded
    # Supervisor or a plain Session:
    sess = recorder.wrap(sess, global_step);  recorder.watch_saver(saver)  # or:
    with recorder.saving(path): saver.save(sess, path)
    # A CheckpointSaverHook you build: listeners=[recorder.listener()]

Standard library and TensorFlow only (TensorFlow is imported when a session starts, not
here): importing this module costs a job nothing.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ENV_DIR = "POSTMORTEM_FLIGHT_DIR"  # the base directory flight directories are made in
# Settings an operator can give a job without touching its code (a constructor argument wins):
ENV_STALL = "POSTMORTEM_FLIGHT_STALL_AFTER_S"  # seconds
ENV_AUTO_CAPTURE = "POSTMORTEM_FLIGHT_AUTO_CAPTURE"  # "1" to capture on a stall
FLIGHT_FILE = "flight.json"
MARKER = "recorder.lock"  # kept open while the job runs: capture finds the dir by it
FORMAT = "postmortem-flight"
VERSION = 1
FIRST_TRACED_STEPS = 3  # the first steps are traced whatever the interval
STALL_FACTOR = 20.0  # a step this many times slower than the recent median is a stall
MIN_STALL_S = 30.0  # ... but never one shorter than this (warm-up, a slow save)


def default_dir(pid: int | None = None, tmp: str | None = None) -> Path:
    """<tmp>/postmortem-flight/<job>-<task>-<pid>, or under $POSTMORTEM_FLIGHT_DIR."""
    base = os.environ.get(ENV_DIR) or os.path.join(
        tmp or tempfile.gettempdir(), "postmortem-flight"
    )
    job, task = _own_task()
    return Path(base) / f"{job}-{task}-{pid or os.getpid()}"


def _own_task() -> tuple[str, str]:
    """The job and task index from the classic flags or TF_CONFIG, for the directory name."""
    args = sys.argv
    values: dict[str, str] = {}
    for i, arg in enumerate(args):
        for name in ("job_name", "task_index"):
            for prefix in (f"--{name}=", f"-{name}="):
                if arg.startswith(prefix):
                    values[name] = arg[len(prefix) :]
            if arg in (f"--{name}", f"-{name}") and i + 1 < len(args):
                values[name] = args[i + 1]
    if "job_name" not in values:
        try:
            task = json.loads(os.environ.get("TF_CONFIG", "{}")).get("task", {})
            values["job_name"] = str(task.get("type", "job"))
            values["task_index"] = str(task.get("index", 0))
        except (ValueError, AttributeError):
            pass
    return values.get("job_name", "job"), values.get("task_index", "0")


class FlightRecorder:
    def __init__(
        self,
        flight_dir: str | os.PathLike[str] | None = None,
        trace_every_n_steps: int = 100,
        keep_steps: int = 2000,
        keep_traces: int = 5,
        stall_after_s: float | None = None,
        auto_capture: bool | None = None,
        write_every_s: float = 2.0,
        capture_args: tuple[str, ...] = ("--samples", "5", "--interval", "1"),
    ) -> None:
        self.dir = Path(flight_dir) if flight_dir is not None else default_dir()
        self.trace_every = max(0, int(trace_every_n_steps))
        self.stall_after_s = stall_after_s if stall_after_s is not None else _env_seconds(ENV_STALL)
        self.auto_capture = (
            auto_capture
            if auto_capture is not None
            else os.environ.get(ENV_AUTO_CAPTURE, "") in ("1", "true", "yes")
        )
        self.write_every_s = write_every_s
        self.capture_args = capture_args
        self.steps: collections.deque[list[Any]] = collections.deque(maxlen=keep_steps)
        self.traces: collections.deque[dict[str, Any]] = collections.deque(maxlen=keep_traces)
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.inventory: dict[str, Any] = {}
        self.count = 0  # steps begun
        self.current: list[Any] | None = None  # [start, None, None, traced] of a step running
        self.saving_since: tuple[float, Any, str] | None = None
        self.saving_thread: int | None = None
        self._save_depth = 0
        self._last_save_began = 0.0
        self.incident: str | None = None  # the stall the watchdog reported last
        self.captures: list[str] = []
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._marker: Any = None
        self.unwritable = ""  # why the flight directory cannot be written, when it cannot
        self._tf: Any = None
        self.started = time.time()

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> FlightRecorder:
        """Create the flight directory and start the writer and the watchdog (idempotent)."""
        if self._threads:
            return self
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            # Kept open for the life of the job: `postmortem capture` finds the directory
            # among the process's open files.
            self._marker = open(self.dir / MARKER, "w")  # noqa: SIM115
            self._marker.write(f"{os.getpid()}\n")
            self._marker.flush()
        except OSError as exc:
            # The job must train on: record in memory, say once why nothing is written.
            self.unwritable = f"{exc.strerror or exc}: {self.dir}"
            print(
                f"postmortem.recorder: cannot write the flight directory ({self.unwritable}); "
                f"recording in memory only. Set {ENV_DIR} to a writable directory.",
                file=sys.stderr,
            )
        for target, name in ((self._write_loop, "writer"), (self._watch_loop, "watchdog")):
            thread = threading.Thread(target=target, name=f"postmortem-flight-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stop.set()
        self._dirty.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._write()
        if self._marker is not None:
            self._marker.close()

    # -- what a job calls ----------------------------------------------------------------

    def hook(self) -> Any:
        """A SessionRunHook for MonitoredTrainingSession (chief and non-chief)."""
        tf = self._import_tf()
        recorder = self

        class FlightHook(tf.compat.v1.train.SessionRunHook):  # type: ignore[misc, name-defined]
            def begin(self) -> None:
                recorder.start()
                self.global_step = tf.compat.v1.train.get_global_step()

            def after_create_session(self, session: Any, coord: Any) -> None:
                # The graph is final now: the Scaffold's saver exists. Its saves (the
                # CheckpointSaverHook's) are recorded by wrapping that saver's save().
                recorder.record_graph(session.graph, config=getattr(session, "_config", None))
                for saver in session.graph.get_collection("savers"):
                    recorder.watch_saver(saver)

            def before_run(self, run_context: Any) -> Any:
                traced = recorder.step_begins()
                fetches = (
                    {"global_step": self.global_step} if self.global_step is not None else None
                )
                options = recorder.trace_options() if traced else None
                return tf.compat.v1.train.SessionRunArgs(fetches, options=options)

            def after_run(self, run_context: Any, run_values: Any) -> None:
                results = run_values.results or {}
                recorder.step_ends(results.get("global_step"), run_values.run_metadata)

        return FlightHook()

    def listener(self) -> Any:
        """A CheckpointSaverListener: each save's begin and end."""
        tf = self._import_tf()
        recorder = self

        class FlightListener(tf.compat.v1.train.CheckpointSaverListener):  # type: ignore[misc, name-defined]
            def before_save(self, session: Any, global_step_value: Any) -> None:
                recorder.save_begins(global_step_value)

            def after_save(self, session: Any, global_step_value: Any) -> None:
                recorder.save_ends(global_step_value)

        return FlightListener()

    def wrap(self, session: Any, global_step: Any = None) -> Any:
        """For Supervisor and plain sessions: a session whose run() is recorded. It is a
        SessionInterface, so Saver.save takes it; runs made while saving() is open (the
        save's own) are not steps."""
        self.start()
        self.record_graph(getattr(session, "graph", None), config=getattr(session, "_config", None))
        from tensorflow.python.client import session as tf_session  # SessionInterface

        class Recorded(RecordedSession, tf_session.SessionInterface):  # type: ignore[misc]
            pass

        return Recorded(self, session, global_step)

    def saver(self, **kwargs: Any) -> Any:
        """A tf.compat.v1.train.Saver whose every save is recorded (for a Supervisor, which
        saves from its own thread)."""
        tf = self._import_tf()
        recorder = self

        class RecordedSaver(tf.compat.v1.train.Saver):  # type: ignore[misc, name-defined]
            def save(
                self, sess: Any, save_path: str, global_step: Any = None, *args: Any, **more: Any
            ) -> Any:
                step = global_step if isinstance(global_step, int) else None
                with recorder.saving(save_path, step):
                    return super().save(sess, save_path, global_step, *args, **more)

        return RecordedSaver(**kwargs)

    def watch_saver(self, saver: Any) -> None:
        """Record every save of this Saver (the instance's save() is wrapped, once)."""
        if getattr(saver, "_postmortem_recorded", False):
            return
        original = saver.save
        recorder = self

        def save(sess: Any, save_path: str, global_step: Any = None, *args: Any, **kw: Any) -> Any:
            step = global_step if isinstance(global_step, int) else None
            with recorder.saving(save_path, step):
                return original(sess, save_path, global_step, *args, **kw)

        saver.save = save
        saver._postmortem_recorded = True

    @contextlib.contextmanager
    def step(self, global_step: Any = None) -> Iterator[None]:
        """One step of a TF2 custom loop: `with recorder.step(): train_step()`. Its time is
        recorded; `global_step` (a number, a tf.Variable or a callable returning one) is
        read when the step ends. TF2 steps are not traced (no RunMetadata in eager mode)."""
        self.step_begins()
        try:
            yield
        finally:
            value = global_step() if callable(global_step) else global_step
            self.step_ends(_numpy(value))

    @contextlib.contextmanager
    def saving(self, path: str = "", global_step: Any = None) -> Iterator[None]:
        """Mark a Saver.save: `with recorder.saving(path): saver.save(sess, path)`."""
        self.save_begins(global_step, path)
        try:
            yield
        finally:
            self.save_ends(global_step, path)

    # -- recording -----------------------------------------------------------------------

    def step_begins(self) -> bool:
        """A step starts; True when it is to be traced."""
        self.count += 1
        traced = self.count <= FIRST_TRACED_STEPS or (
            self.trace_every > 0 and self.count % self.trace_every == 0
        )
        self.current = [time.time(), None, None, traced]
        return traced

    def step_ends(self, global_step: Any = None, run_metadata: Any = None) -> None:
        step = self.current
        if step is None:
            return
        # A save run by a hook after this step's run (MonitoredTrainingSession's
        # CheckpointSaverHook) is not part of the step: the step ended when the save began.
        step[1] = time.time()
        if step[0] < self._last_save_began < step[1]:
            step[1] = self._last_save_began
        step[2] = _int(global_step)
        self.steps.append(step)
        self.current = None
        if step[3] and run_metadata is not None:
            try:
                trace = step_stats(run_metadata)
            except Exception:  # noqa: BLE001 - a trace we cannot read must not fail a step
                trace = None
            if trace:
                self.traces.append(
                    {"step": step[2], "started": step[0], "ended": step[1], "devices": trace}
                )
                self._dirty.set()
        if self.incident and self.incident.startswith("step"):
            self._event("stall-ended", what="step", step=step[2])
            self.incident = None

    def save_begins(self, global_step: Any = None, path: str = "") -> None:
        self._save_depth += 1
        if self._save_depth > 1:
            return  # a listener and a wrapped saver both report the one save
        self.saving_since = (time.time(), _int(global_step), path)
        self.saving_thread = threading.get_ident()
        self._last_save_began = self.saving_since[0]
        self._event("save-began", step=_int(global_step), path=path)

    def save_ends(self, global_step: Any = None, path: str = "") -> None:
        self._save_depth = max(0, self._save_depth - 1)
        if self._save_depth > 0:
            return
        began = self.saving_since
        self.saving_since = None
        seconds = time.time() - began[0] if began else None
        self._event("save-ended", step=_int(global_step), path=path, seconds=seconds)
        if self.incident and self.incident.startswith("save"):
            self._event("stall-ended", what="save")
            self.incident = None

    def trace_options(self) -> Any:
        tf = self._import_tf()
        return tf.compat.v1.RunOptions(trace_level=tf.compat.v1.RunOptions.FULL_TRACE)

    def record_graph(
        self, graph: Any = None, saver: Any = None, config: Any = None, sync_optimizer: Any = None
    ) -> None:
        """The variables (name, shape, dtype, bytes, device), the saver, sync replicas and
        the session's deadlines, once."""
        if self.inventory:
            return
        tf = self._import_tf()
        try:
            graph = graph or tf.compat.v1.get_default_graph()
            self.inventory = inventory(tf, graph, saver, config, sync_optimizer)
        except Exception as exc:  # noqa: BLE001 - the job runs on whatever happens here
            self.inventory = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        self._dirty.set()

    def _event(self, kind: str, **data: Any) -> None:
        with self._lock:
            self.events.append({"kind": kind, "time": time.time(), **data})
        self._dirty.set()

    # -- the writer and the watchdog ---------------------------------------------------------

    def document(self) -> dict[str, Any]:
        with self._lock:
            events = list(self.events)
        steps = _snapshot(self.steps)
        traces = _snapshot(self.traces)
        current = self.current
        return {
            "format": FORMAT,
            "version": VERSION,
            "pid": os.getpid(),
            "argv": sys.argv[:50],
            "started": self.started,
            "written": time.time(),
            "trace_every_n_steps": self.trace_every,
            "stall_after_s": self.stall_after_s,
            "steps": [list(s) for s in steps],
            "current_step": list(current) if current else None,
            "saving_since": list(self.saving_since) if self.saving_since else None,
            "traces": traces,
            "events": events,
            "inventory": self.inventory,
            "captures": list(self.captures),
        }

    def _write(self) -> None:
        if self.unwritable:
            return
        try:
            data = json.dumps(self.document(), separators=(",", ":"), default=str).encode()
            fd, tmp = tempfile.mkstemp(prefix=".flight.", dir=self.dir)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, self.dir / FLIGHT_FILE)
        except OSError:
            pass  # a full disk must not stop the job; the next write tries again

    def _write_loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait(self.write_every_s)
            self._dirty.clear()
            _survive(self._write)

    def stall_threshold(self) -> float:
        if self.stall_after_s is not None:
            return self.stall_after_s
        recent = [s[1] - s[0] for s in _snapshot(self.steps)[-100:] if s[1] is not None]
        typical = statistics.median(recent) if recent else 0.0
        return max(MIN_STALL_S, STALL_FACTOR * typical)

    def _watch_loop(self) -> None:
        while not self._stop.wait(0.5):
            _survive(self._watch_once)

    def _watch_once(self) -> None:
        now = time.time()
        threshold = self.stall_threshold()
        current, saving = self.current, self.saving_since
        if self.incident is not None:
            return
        if saving is not None and now - saving[0] > threshold:
            self._stall("save", saving[0], now)  # a step that waits on a save: the save
        elif current is not None and now - current[0] > threshold:
            self._stall("step", current[0], now)

    def _stall(self, what: str, began: float, now: float) -> None:
        self.incident = f"{what}@{began:.3f}"
        last = self.steps[-1] if self.steps else None
        self._event(
            "stall",
            what=what,
            began=began,
            seconds=now - began,
            last_step=last[2] if last else None,
        )
        if self.auto_capture:
            self._capture(began)
        self._write()

    def _capture(self, began: float) -> None:
        """`postmortem capture --discover`, detached, once per incident, beside the flight
        directory. Its output and errors go to a log there."""
        out = self.dir.parent / f"capture-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        argv = [
            sys.executable,
            "-m",
            "postmortem",
            "capture",
            "--discover",
            "-o",
            str(out),
            *self.capture_args,
        ]
        env = dict(os.environ)
        # The capture imports this postmortem, wherever the job found it.
        here = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        try:
            with open(self.dir / "capture.log", "ab") as log:
                child = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    close_fds=True,
                    env=env,
                )
        except OSError as exc:
            self._event("capture-failed", reason=str(exc))
            return
        self.captures.append(str(out))
        self._event("capture-started", dump=str(out), began=began, pid=child.pid)

    def _import_tf(self) -> Any:
        if self._tf is None:
            import tensorflow as tf  # the job's own: already imported when it asks for a hook

            self._tf = tf
        return self._tf


class RecordedSession:
    """A session whose run() is recorded as a step (Supervisor and plain sessions)."""

    def __init__(self, recorder: FlightRecorder, session: Any, global_step: Any = None) -> None:
        self._recorder = recorder
        self._session = session
        self._global_step = global_step

    def run(
        self, fetches: Any, feed_dict: Any = None, options: Any = None, run_metadata: Any = None
    ) -> Any:
        recorder = self._recorder
        if recorder.saving_since is not None and threading.get_ident() == recorder.saving_thread:
            # The save's own run (Saver.save on this session): not a training step.
            return self._session.run(
                fetches, feed_dict=feed_dict, options=options, run_metadata=run_metadata
            )
        traced = recorder.step_begins()
        metadata = run_metadata
        if traced and options is None:
            options = recorder.trace_options()
            if metadata is None:
                metadata = recorder._import_tf().compat.v1.RunMetadata()
        step = None
        if self._global_step is not None:
            # The global step rides along in the same run: no extra round trip.
            results, step = self._session.run(
                [fetches, self._global_step],
                feed_dict=feed_dict,
                options=options,
                run_metadata=metadata,
            )
        else:
            results = self._session.run(
                fetches, feed_dict=feed_dict, options=options, run_metadata=metadata
            )
        recorder.step_ends(step, metadata if traced else None)
        return results

    @property
    def graph(self) -> Any:
        return self._session.graph

    @property
    def sess_str(self) -> Any:
        return self._session.sess_str

    def partial_run_setup(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.partial_run_setup(*args, **kwargs)

    def partial_run(self, *args: Any, **kwargs: Any) -> Any:
        return self._session.partial_run(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


# -- what a trace and a graph hold, as plain data -------------------------------------------


def step_stats(run_metadata: Any) -> list[dict[str, Any]]:
    """RunMetadata.step_stats -> [{device, nodes: [[name, op, start_us, end_us, label]]}],
    remote devices (the ps) included."""
    devices = []
    for dev in run_metadata.step_stats.dev_stats:
        nodes = []
        for node in dev.node_stats:
            start = node.all_start_micros
            end = start + max(node.all_end_rel_micros, node.op_end_rel_micros)
            label = node.timeline_label
            op = label.split(" = ", 1)[1].split("(", 1)[0] if " = " in label else ""
            nodes.append([node.node_name, op, start, end, label[:300]])
        devices.append({"device": dev.device, "nodes": nodes})
    return devices


def inventory(tf: Any, graph: Any, saver: Any, config: Any, sync_optimizer: Any) -> dict[str, Any]:
    variables = []
    for var in graph.get_collection(tf.compat.v1.GraphKeys.GLOBAL_VARIABLES):
        dims = var.shape.as_list() if var.shape.rank is not None else []
        size = var.dtype.size
        for d in dims:
            size *= d or 0
        variables.append(
            {
                "name": var.op.name,
                "shape": dims,
                "dtype": var.dtype.base_dtype.name,
                "bytes": size,
                "device": var.device,
            }
        )
    savers = [saver] if saver is not None else list(graph.get_collection("savers"))
    saver_info = []
    for s in savers:
        definition = getattr(s, "saver_def", None)
        save_op = definition.save_tensor_name if definition is not None else ""
        try:
            device = graph.as_graph_element(save_op).op.device if save_op else ""
        except (KeyError, ValueError, TypeError):
            device = ""
        saver_info.append(
            {
                "sharded": bool(definition.sharded) if definition else None,
                "save_tensor": save_op,
                "device": device,
            }
        )
    sync: dict[str, Any] = {}
    if sync_optimizer is not None:
        sync = {
            "replicas_to_aggregate": getattr(sync_optimizer, "_replicas_to_aggregate", None),
            "total_num_replicas": getattr(sync_optimizer, "_total_num_replicas", None),
        }
    elif any(op.name.endswith("sync_token_q") for op in graph.get_operations()):
        # SyncReplicasOptimizer built by code we do not see: its accumulators' take_grad
        # carries replicas_to_aggregate as a constant.
        sync = {"replicas_to_aggregate": _take_grad_count(tf, graph), "total_num_replicas": None}
    deadlines = {}
    if config is not None:
        deadlines["operation_timeout_in_ms"] = int(getattr(config, "operation_timeout_in_ms", 0))
    return {
        "variables": variables,
        "savers": saver_info,
        "sync_replicas": sync,
        "session": deadlines,
    }


def _env_seconds(name: str) -> float | None:
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return None
    return value if value > 0 else None


def _take_grad_count(tf: Any, graph: Any) -> int | None:
    for op in graph.get_operations():
        if op.type in ("AccumulatorTakeGradient", "ResourceAccumulatorTakeGradient"):
            try:
                source = op.inputs[1].op
                if source.type == "Const":
                    return int(tf.make_ndarray(source.get_attr("value")))
            except (IndexError, ValueError, TypeError):
                continue
    return None


def _survive(work: Any) -> None:
    """Run one pass of a recorder thread: the thread outlives anything a pass meets."""
    try:
        work()
    except Exception:  # noqa: BLE001, S110 - the job must never see the recorder fail
        pass


def _snapshot(ring: collections.deque[Any]) -> list[Any]:
    """A copy of a ring the job's thread appends to: deque.copy runs in C under the GIL, so
    no append lands half-way through it."""
    return list(ring.copy())


def _numpy(value: Any) -> Any:
    """A tf.Variable's or tensor's value; anything else as it is."""
    numpy = getattr(value, "numpy", None)
    if callable(numpy):
        try:
            return numpy()
        except Exception:  # noqa: BLE001 - a value we cannot read must not fail a step
            return None
    return value


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
