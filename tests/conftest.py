"""Shared by the tests: the committed samples, a dump builder that writes the capture's
format through its one owner (collectors.layout), hand-built facts for rule tests, and the
verdict of a dump in the shape scripts read (`--json`'s `verdict`)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import postmortem
from collectors import layout
from postmortem.serialize import verdict_summary

# The tests never keep analyses in the user's cache directory (postmortem.cache): a test
# that edits a dump and analyzes it again must see its edit. tests/unit/test_cache.py turns
# the cache on in a directory of its own.
os.environ["POSTMORTEM_CACHE"] = "off"

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
HOSTILE = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">'
T0 = 1_700_000_000.0
PS, W0 = 101, 102
CLUSTER_ARGS = ["--ps_hosts=127.0.0.1:2222", "--worker_hosts=127.0.0.1:2223,127.0.0.1:2224"]
SIX_MB = 6 * 1024 * 1024


def sample_dumps() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(p.parent for p in SAMPLES.glob("*/manifest.json"))


def verdict(dump: Path | str) -> dict[str, Any]:
    """The top finding of a dump, as `postmortem analyze --json` prints it under `verdict`."""
    return verdict_summary(postmortem.analyze(postmortem.load(dump)).verdict.finding)


def py_frame(name: str, filename: str, line: int) -> dict[str, Any]:
    """One frame as `py-spy dump --json` prints it."""
    return {"name": name, "filename": filename, "module": None,
            "short_filename": filename.rsplit("/", 1)[-1], "line": line, "locals": None,
            "is_entry": False, "is_shim_entry": False}


SESSION = "/usr/lib/python3/site-packages/tensorflow/python/client/session.py"
SAVER = "/usr/lib/python3/site-packages/tensorflow/python/training/saver.py"
THREADING = "/usr/lib/python3.11/threading.py"
SAVE_STACK = [  # innermost first, as py-spy prints it
    py_frame("_call_tf_sessionrun", SESSION, 1477), py_frame("BaseSession._run_fn", SESSION, 1384),
    py_frame("BaseSession._do_call", SESSION, 1401), py_frame("BaseSession._do_run", SESSION, 1394),
    py_frame("BaseSession._run", SESSION, 1224), py_frame("BaseSession.run", SESSION, 977),
    py_frame("Saver.save", SAVER, 1300), py_frame("main", "/job/train.py", 80),
    py_frame("<module>", "/job/train.py", 99),
]
PS_STACK = [py_frame("Server.join", "/usr/lib/python3/site-packages/tensorflow/python/training/"
                     "server_lib.py", 262), py_frame("run_ps", "/job/train.py", 40),
            py_frame("<module>", "/job/train.py", 99)]
LISTENER_STACK = [py_frame("Condition.wait", THREADING, 327),
                  py_frame("Event.wait", THREADING, 629),
                  py_frame("listen", "/job/hooks.py", 12), py_frame("Thread.run", THREADING, 982),
                  py_frame("Thread._bootstrap_inner", THREADING, 1045),
                  py_frame("Thread._bootstrap", THREADING, 1002)]


@dataclass
class DumpBuilder:
    """Writes a dump file by file in the capture's format, then its manifest."""

    root: Path
    manifest: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.manifest = {
            "format": layout.FORMAT_NAME, "schema_version": layout.SCHEMA_VERSION,
            "tool_version": "0.1.0", "host": "node-1", "started_at": T0, "ended_at": T0 + 2.1,
            "complete": True, "interrupted": False, "command": ["postmortem", "capture"],
            "options": {"samples": 3, "interval": 1.0}, "targets": [], "rounds": [],
            "outcomes": [], "tf_servers": [], "checkpoint_dirs": [], "logs": [], "pauses": {},
        }

    def write(self, relative: str, value: Any) -> Path:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value if isinstance(value, str) else json.dumps(value))
        return path

    def outcome(self, target: str, collector: str, round_index: int | None,
                status: str = "ok", reason: str = "", kind: str = "") -> None:
        self.manifest["outcomes"].append(
            {"target": target, "collector": collector, "status": status, "round": round_index,
             "reason": reason, "seconds": 0.01, "files": [], "kind": kind})

    def process(self, pid: int, args: Iterable[str], streams: dict[str, str] | None = None,
                **info: Any) -> None:
        self.manifest["targets"].append(
            {"pid": pid, "dir": layout.process_dir(pid),
             "process_file": layout.process_file(pid), "std_streams": streams or {}})
        self.write(layout.process_file(pid), {
            "pid": pid, "ppid": 1, "pgid": pid, "comm": "python", "exe": "/usr/bin/python3",
            "cwd": "/job", "cmdline": ["python", *args], "uid": 1000, "starttime_ticks": 1,
            "env": {}, "python": True, "tensorflow": True, "clk_tck": 100, **info})

    def rounds(self, count: int) -> None:
        self.manifest["rounds"] = [
            {"index": i, "started_at": T0 + i, "ended_at": T0 + i + 0.05} for i in range(count)]

    def procfs(self, pid: int, round_index: int, **data: Any) -> None:
        record = {"pid": pid, "time": T0 + round_index + 0.01, "state": "S", "utime": 50,
                  "stime": 5, "num_threads": 1, "clk_tck": 100, "threads": [],
                  "io": {"rchar": 1, "wchar": 2, "write_bytes": 0}, "files": [], "sockets": []}
        record.update(data)
        self.write(layout.procfs_file(pid, round_index), record)
        self.outcome(str(pid), "procfs", round_index)

    def pyspy(self, pid: int, round_index: int, traces: list[dict[str, Any]]) -> None:
        self.write(layout.pyspy_file(pid, round_index), traces)
        self.outcome(str(pid), "pyspy", round_index)

    def finish(self) -> Path:
        self.write(layout.MANIFEST, self.manifest)
        return self.root


def write_cluster_dump(root: Path, thread_name: str = "checkpoint-listener",
                       error_line: str = "InternalError: Failed to encode tensor to byte buffer",
                       ) -> Path:
    """A ps stopped with SIGSTOP, worker:0 stuck in Saver.save -> session.run, worker:1
    absent; logs, a checkpoint dir whose temp file does not grow, a TF profiler trace."""
    b = DumpBuilder(root)
    b.rounds(3)
    b.manifest["command"] = ["postmortem", "capture", "--pid", str(PS)]
    for pid, job, stack, state in ((PS, "ps", PS_STACK, "T"), (W0, "worker", SAVE_STACK, "S")):
        b.process(pid, ["/job/train.py", f"--job_name={job}", "--task_index=0", *CLUSTER_ARGS],
                  {"stderr": f"/job/{job}.err"})
        port = 2222 if job == "ps" else 2223
        for i in range(3):
            threads = [{"tid": pid, "name": "python", "state": state, "wchan": "futex_do_wait",
                        "utime": 50, "stime": 5}]
            threads += [{"tid": pid + 1000 + k, "name": f"tf_Eigen{k}", "state": state,
                         "wchan": "futex_do_wait", "utime": 1, "stime": 0} for k in range(4)]
            sockets = [{"fd": 5, "inode": 1, "proto": "tcp", "local": f"127.0.0.1:{port}",
                        "remote": "0.0.0.0:0", "tcp_state": "LISTEN", "tx_queue": 0,
                        "rx_queue": 2 if job == "ps" else 0}]
            if job == "worker":
                threads.append({"tid": pid + 500, "name": "listener", "state": "S",
                                "wchan": "futex_do_wait", "utime": 0, "stime": 0})
                sockets.append({"fd": 7, "inode": 2, "proto": "tcp", "local": "127.0.0.1:40000",
                                "remote": "127.0.0.1:2222", "tcp_state": "ESTABLISHED",
                                "tx_queue": 0, "rx_queue": 0})
            b.procfs(pid, i, state=state, num_threads=len(threads), threads=threads,
                     sockets=sockets)
            traces = [{"pid": pid, "thread_id": 1, "thread_name": "MainThread",
                       "os_thread_id": pid, "active": False, "owns_gil": False, "frames": stack}]
            if job == "worker":
                traces.append({"pid": pid, "thread_id": 2, "thread_name": thread_name,
                               "os_thread_id": pid + 500, "active": False, "owns_gil": False,
                               "frames": LISTENER_STACK})
            b.pyspy(pid, i, traces)
    stamp = "2023-11-14 22:13:{:02d},{:03d}"
    log = [f"{stamp.format(10, 0)} {W0} MainThread INFO global_step: 100 loss = 0.5",
           f"{stamp.format(12, 500)} {W0} MainThread INFO global_step: 200 loss = 0.4",
           f"{stamp.format(15, 0)} {W0} MainThread INFO Saving checkpoint to path /ckpt/model.ckpt",
           f"{stamp.format(16, 250)} {W0} MainThread ERROR {error_line}",
           "a line without a timestamp: step 300"]
    b.write(layout.std_stream_file(W0, "stderr"), "\n".join(log) + "\n")
    for i in range(3):
        b.write(layout.checkpoint_file(0, i), {
            "dir": "/ckpt", "time": T0 + i + 0.02, "exists": True, "state_file": "",
            "files": [{"name": "checkpoint", "size": 120, "mtime": T0 - 100},
                      {"name": "model.ckpt-300_temp/part-00000-of-00001.data-00000-of-00001",
                       "size": 4096 * (i + 1) if i < 2 else 8192, "mtime": T0}]})
    b.manifest["checkpoint_dirs"] = [{"index": 0, "dir": "/ckpt"}]
    events = [("RunGraph", "", "", 0, 900_000_000),
              ("save/SaveV2:SaveV2", "save/SaveV2", "SaveV2", 1_000_000, 800_000_000),
              ("edge_6_w/_Recv:_Recv", "edge_6_w/_Recv", "_Recv", 2_000_000, 700_000_000)]
    b.write(layout.tf_events_file(0), {
        "address": "127.0.0.1:2223", "traced_at": T0 + 0.5, "duration_ms": 500, "answered": True,
        "idle": False, "events": [{"plane": "/host:CPU", "line": "TF Ops", "name": n, "node": nd,
                                   "op": op, "start_ns": int((T0 + 0.5) * 1e9) + s,
                                   "duration_ns": d} for n, nd, op, s, d in events]})
    b.manifest["tf_servers"] = [{"index": 0, "address": "127.0.0.1:2223"}]
    b.outcome("127.0.0.1:2223", "tf_profiler", None)
    return b.finish()


# -- flight recorder files, in postmortem.recorder's format ----------------------------------
PS_DEVICE = "/job:ps/replica:0/task:0/device:CPU:0"
WORKER_DEVICE = "/job:worker/replica:0/task:0/device:CPU:0"


def recv_label(size: int, edge: str = "edge_9_w/read", src: str = PS_DEVICE,
               dst: str = WORKER_DEVICE) -> str:
    return f"[{size}B] [6.8Mb/s] {edge} from {src} to {dst}"


def flight_doc(steps: list[list[Any]], *, saving_since: list[Any] | None = None,
               events: list[dict[str, Any]] | None = None, variables: list[dict[str, Any]] | None
               = None, sharded: bool | None = False, traces: list[dict[str, Any]] | None = None,
               timeout_ms: int = 0, written: float | None = None) -> dict[str, Any]:
    """A flight.json as postmortem.recorder writes it."""
    return {
        "format": "postmortem-flight", "version": 1, "pid": W0, "argv": ["train.py"],
        "started": T0 - 600, "written": written if written is not None else T0 + 2,
        "trace_every_n_steps": 100, "stall_after_s": None, "steps": steps,
        "current_step": None, "saving_since": saving_since, "traces": traces or [],
        "events": events or [], "captures": [],
        "inventory": {
            "variables": variables or [],
            "savers": [] if sharded is None else [
                {"sharded": sharded, "save_tensor": "save/control_dependency:0",
                 "device": "/job:worker/task:0"}],
            "sync_replicas": {}, "session": {"operation_timeout_in_ms": timeout_ms},
        },
    }


def steps_between(start: float, end: float, every: float, first_step: int = 1) -> list[list[Any]]:
    out, t, step = [], start, first_step
    while t + 0.01 < end:
        out.append([t, t + 0.01, step, False])
        t += every
        step += 1
    return out


def add_flight(dump: Path, pid: int, document: Any) -> None:
    path = dump / layout.flight_file(pid)
    path.write_text(document if isinstance(document, str) else json.dumps(document))


def add_recorded_save(dump: Path) -> None:
    """worker:0 of write_cluster_dump ran the flight recorder: steps until 30 s before the
    capture, a save open since then, a traced step with a transfer from the ps."""
    start = int((T0 - 31) * 1e6)
    add_flight(dump, W0, flight_doc(
        steps_between(T0 - 40, T0 - 30, 0.1), saving_since=[T0 - 29.5, 100, "/ckpt"],
        traces=[{"step": 99, "started": T0 - 31, "ended": T0 - 30.9, "devices": [
            {"device": PS_DEVICE, "nodes": [["RecvTensor", "", start, start + 500,
                                             recv_label(4096)]]},
            {"device": WORKER_DEVICE, "nodes": [["MatMul", "MatMul", start + 500,
                                                 start + 700, "MatMul = MatMul(a, b)"]]}]}]))


@pytest.fixture()
def cluster_dump(tmp_path: Path) -> Path:
    return write_cluster_dump(tmp_path / "dump")


@pytest.fixture()
def hostile_dump(tmp_path: Path) -> Path:
    return write_cluster_dump(tmp_path / "hostile", thread_name=HOSTILE,
                              error_line=f"ERROR {HOSTILE}")


def hand_facts(root: Path, members: list[Any] | None = None, **blocks: Any) -> Any:
    """Facts for rule tests, built by hand: a one-process dump underneath, then each named
    building block (threads, health, logs, checkpoints, write_rates, ...) set directly."""
    from postmortem.analysis.cluster import Health
    from postmortem.analysis.facts import Facts

    b = DumpBuilder(root)
    b.process(1, ["/job/train.py"])
    facts = Facts(postmortem.load(b.finish()))
    members = members or []
    facts.labels = {m.pid: m.role for m in members if m.pid is not None}
    facts.pid_by_role = {m.role: m.pid for m in members if m.pid is not None}
    facts.__dict__["members"] = members
    facts.__dict__["_member_by_role"] = {m.role: m for m in members}
    health = {m.role: Health(m, list(m.problems), "manifest.json") for m in members}
    defaults: dict[str, Any] = {
        "threads": [], "health": health, "logs": {}, "checkpoints": [], "write_rates": {},
        "wait_for": [], "outliers": [], "stat_timeouts": [], "exited_pids": set(),
        "progress": [], "saves": [], "flights": [],
    }
    defaults.update(blocks)
    for name, value in defaults.items():
        facts.__dict__[name] = value
    if "checkpoint_progress" not in blocks:
        facts.__dict__["checkpoint_progress"] = {c.dir: c for c in defaults["checkpoints"]}
    facts.__dict__["_threads_by_pid"] = {}
    for t in defaults["threads"]:
        facts.__dict__["_threads_by_pid"].setdefault(t.pid, []).append(t)
    return facts
