"""The flight recorder: what postmortem.recorder writes, how a dump reads it, what the
analysis takes from it, and how the report and chrome-trace draw it.

The recorder's own behaviour (rings, watchdog, atomic writes, an unwritable directory, the
detached capture) runs here without TensorFlow; its step_stats parsing runs a real
TensorFlow session when TensorFlow is installed. Dumps are built in the capture's format
with flight files in the recorder's format; live jobs with the recorder are in
tests/integration/test_recorder.py.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import postmortem
from collectors import flight as flight_collector
from collectors import layout
from postmortem.analysis import flight as flight_facts
from postmortem.analysis.rules import oversized_tensor
from postmortem.exports import chrome_trace
from postmortem.model import (
    FlightRecord,
    HangClass,
    RecordedSave,
    RecordedStep,
    RecordedVariable,
    Status,
)
from postmortem.recorder import FlightRecorder, RecordedSession, step_stats
from postmortem.render import RenderOptions
from tests.conftest import (
    PS,
    PS_DEVICE,
    T0,
    W0,
    WORKER_DEVICE,
    DumpBuilder,
    add_flight,
    add_recorded_save,
    flight_doc,
    recv_label,
    steps_between,
    verdict,
    write_cluster_dump,
)
from tests.unit.test_rules import PS0, SAVE, hand_facts, thread
from tests.unit.test_rules import W0 as W0_MEMBER

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
GIB = 2**30
QUIET = "Saving checkpoint went on"  # a log line that names no error


def wait_until(check: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


# -- flight files in the recorder's format -----------------------------------------------------


def huge_variable(device: str = "/job:ps/task:0", size: int = int(2.16 * GIB)) -> dict[str, Any]:
    return {"name": "huge_embedding", "shape": [540_000_000, 1], "dtype": "float32",
            "bytes": size, "device": device}


def quiet_cluster(root: Path, saver_state: str = "S") -> Path:
    """ps:0 running and idle, worker:0's main thread in Saver.save -> session.run, no log
    line, no checkpoint directory: what a hang looks like with nothing printed."""
    from tests.conftest import PS_STACK, SAVE_STACK

    cluster = ["--ps_hosts=127.0.0.1:2222", "--worker_hosts=127.0.0.1:2223"]
    b = DumpBuilder(root)
    b.rounds(3)
    for pid, job, stack in ((PS, "ps", PS_STACK), (W0, "worker", SAVE_STACK)):
        b.process(pid, ["/job/train.py", f"--job_name={job}", "--task_index=0", *cluster])
        port = 2222 if job == "ps" else 2223
        for i in range(3):
            threads = [{"tid": pid, "name": "python", "state": saver_state if job == "worker"
                        else "S", "wchan": "futex_do_wait", "utime": 50, "stime": 5,
                        "voluntary": 10, "nonvoluntary": 1}]
            sockets = [{"fd": 5, "inode": 1, "proto": "tcp", "local": f"127.0.0.1:{port}",
                        "remote": "0.0.0.0:0", "tcp_state": "LISTEN", "tx_queue": 0,
                        "rx_queue": 0}]
            if job == "worker":
                sockets.append({"fd": 7, "inode": 2, "proto": "tcp", "local": "127.0.0.1:40000",
                                "remote": "127.0.0.1:2222", "tcp_state": "ESTABLISHED",
                                "tx_queue": 0, "rx_queue": 0})
            b.procfs(pid, i, num_threads=1, threads=threads, sockets=sockets)
            b.pyspy(pid, i, [{"pid": pid, "thread_id": 1, "thread_name": "MainThread",
                              "os_thread_id": pid, "active": False, "owns_gil": False,
                              "frames": stack}])
    return b.finish()


# -- the recorder, without TensorFlow --------------------------------------------------------


def read_flight(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "flight.json").read_text())
    return data


def test_the_recorder_keeps_steps_and_saves_and_writes_them_atomically(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f", trace_every_n_steps=2, keep_steps=5)
    recorder.start()
    try:
        for step in range(8):
            traced = recorder.step_begins()
            assert traced == (step < 3 or (step + 1) % 2 == 0)  # the first three, then every 2nd
            recorder.step_ends(step)
        with recorder.saving("/ckpt/model.ckpt", 7):
            pass
        # capture finds the directory by the marker the job keeps open
        fds = [{"path": os.readlink(f"/proc/self/fd/{fd}")} for fd in os.listdir("/proc/self/fd")
               if os.path.exists(f"/proc/self/fd/{fd}")]
        found = flight_collector.find_dir(os.getpid(), fds, {})
        assert found is not None and found.endswith("/f")
    finally:
        recorder.close()
    doc = read_flight(tmp_path / "f")
    assert doc["format"] == "postmortem-flight"
    assert [s[2] for s in doc["steps"]] == [3, 4, 5, 6, 7]  # a bounded ring: the newest 5
    assert [e["kind"] for e in doc["events"]] == ["save-began", "save-ended"]
    assert doc["events"][1]["seconds"] >= 0 and doc["saving_since"] is None
    assert not [p for p in (tmp_path / "f").iterdir() if p.name.startswith(".flight.")]


def test_a_tf2_loop_records_its_steps_with_a_context_manager(tmp_path: Path) -> None:
    class Variable:  # as a tf.Variable reads: .numpy()
        def __init__(self) -> None:
            self.value = 0

        def numpy(self) -> int:
            return self.value

    recorder = FlightRecorder(flight_dir=tmp_path / "f")
    step = Variable()
    for _ in range(3):
        with recorder.step(step):
            step.value += 1
    with recorder.step(lambda: 99):
        pass
    assert [s[2] for s in recorder.steps] == [1, 2, 3, 99]
    assert all(s[1] is not None and s[1] >= s[0] for s in recorder.steps)
    with pytest.raises(RuntimeError), recorder.step(step):  # a failed step still ends
        raise RuntimeError("step failed")
    assert recorder.current is None and len(recorder.steps) == 5


def test_a_step_ends_where_a_save_run_by_a_hook_after_it_began(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f")
    recorder.step_begins()
    time.sleep(0.02)
    recorder.save_begins(10, "/ckpt")  # MonitoredTrainingSession's CheckpointSaverHook
    began = recorder.saving_since[0] if recorder.saving_since else 0.0
    time.sleep(0.05)
    recorder.save_ends(10, "/ckpt")
    recorder.step_ends(10)
    (step,) = recorder.steps
    assert step[1] == began  # the step is not charged with the save


def test_a_listener_and_a_watched_saver_report_one_save_once(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f")
    recorder.save_begins(5, "/ckpt")
    recorder.save_begins(5, "/ckpt")  # the same save, seen twice
    recorder.save_ends(5, "/ckpt")
    assert recorder.saving_since is not None  # the outer one has not ended
    recorder.save_ends(5, "/ckpt")
    assert [e["kind"] for e in recorder.events] == ["save-began", "save-ended"]


def test_the_watchdog_reports_a_save_that_outlasts_its_threshold_once(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f", stall_after_s=0.3, write_every_s=0.1)
    recorder.start()
    try:
        recorder.step_begins()  # a step that waits on the save: the save is reported
        recorder.save_begins(42, "/ckpt/model.ckpt")
        assert wait_until(lambda: any(e["kind"] == "stall" for e in recorder.events))
        time.sleep(1.0)  # the watchdog looks every 0.5 s: still one event for one incident
        stalls = [e for e in recorder.events if e["kind"] == "stall"]
        assert len(stalls) == 1 and stalls[0]["what"] == "save"
        assert stalls[0]["seconds"] >= 0.3
        assert wait_until(lambda: any(e["kind"] == "stall" for e in
                                      read_flight(tmp_path / "f")["events"]))
        recorder.save_ends(42, "/ckpt/model.ckpt")
        assert recorder.events[-1]["kind"] == "stall-ended"
    finally:
        recorder.close()


def test_the_default_threshold_follows_the_median_step_but_never_below_30s(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f")
    assert recorder.stall_threshold() == 30.0
    now = time.time()
    recorder.steps.extend([now, now + 3.0, i, False] for i in range(10))
    assert recorder.stall_threshold() == pytest.approx(60.0)


def test_env_settings_configure_a_recorder_without_code(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSTMORTEM_FLIGHT_STALL_AFTER_S", "7.5")
    monkeypatch.setenv("POSTMORTEM_FLIGHT_AUTO_CAPTURE", "1")
    monkeypatch.setenv("POSTMORTEM_FLIGHT_DIR", str(tmp_path / "base"))
    recorder = FlightRecorder()
    assert recorder.stall_after_s == 7.5 and recorder.auto_capture
    assert recorder.dir.parent == tmp_path / "base" and recorder.dir.name.endswith(
        f"-{os.getpid()}")
    assert FlightRecorder(stall_after_s=3, auto_capture=False).stall_after_s == 3
    monkeypatch.setenv("POSTMORTEM_FLIGHT_STALL_AFTER_S", "soon")
    assert FlightRecorder().stall_after_s is None  # garbage is ignored, not fatal


def test_an_unwritable_flight_directory_never_fails_the_job(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    recorder = FlightRecorder(flight_dir=blocker / "flight")
    recorder.start()
    try:
        recorder.step_begins()
        recorder.step_ends(1)
        with recorder.saving("/ckpt"):
            pass
    finally:
        recorder.close()
    assert len(recorder.steps) == 1  # recorded in memory
    err = capsys.readouterr().err
    assert "cannot write the flight directory" in err and "POSTMORTEM_FLIGHT_DIR" in err


def test_auto_capture_starts_one_detached_capture_per_incident(tmp_path: Path) -> None:
    recorder = FlightRecorder(flight_dir=tmp_path / "f", stall_after_s=0.2, auto_capture=True,
                              capture_args=("--samples", "1", "--interval", "0"))
    recorder.start()
    child = None
    try:
        recorder.step_begins()
        assert wait_until(lambda: any(e["kind"] == "capture-started" for e in recorder.events))
        started = [e for e in recorder.events if e["kind"] == "capture-started"]
        child = int(started[0]["pid"])
        time.sleep(1.0)
        assert len([e for e in recorder.events if e["kind"] == "capture-started"]) == 1
        assert os.getpgid(child) == child  # its own session: Ctrl-C of the job spares it
        assert started[0]["dump"].startswith(str(tmp_path))  # beside the flight directory
        # It ends on its own (here: whatever --discover finds, or nothing to capture).
        assert wait_until(lambda: _gone(child), timeout=90)
        assert (tmp_path / "f" / "capture.log").stat().st_size > 0
    finally:
        recorder.close()
        if child is not None and not _gone(child):
            os.killpg(child, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return not os.path.exists(f"/proc/{pid}")
    return waited == pid


def test_a_wrapped_session_records_steps_but_not_the_saves_own_run(tmp_path: Path) -> None:
    class Session:  # the one method a wrapped session forwards here
        def __init__(self) -> None:
            self.calls: list[Any] = []

        def run(self, fetches: Any, feed_dict: Any = None, options: Any = None,
                run_metadata: Any = None) -> Any:
            self.calls.append(fetches)
            return [fetches[0], 41] if isinstance(fetches, list) else fetches

    recorder = FlightRecorder(flight_dir=tmp_path / "f", trace_every_n_steps=0)
    recorder.count = 10  # past the first traced steps: no TensorFlow is needed here
    inner = Session()
    wrapped = RecordedSession(recorder, inner, global_step="global_step:0")
    assert wrapped.run("train_op") == "train_op"
    with recorder.saving("/ckpt", 41):
        wrapped.run("save/control_dependency:0")  # Saver.save on the wrapped session
    assert len(recorder.steps) == 1 and recorder.steps[0][2] == 41
    assert inner.calls == [["train_op", "global_step:0"], "save/control_dependency:0"]


@pytest.mark.skipif(not HAVE_TF, reason="needs tensorflow")
def test_step_stats_of_a_real_traced_run() -> None:
    import tensorflow as tf

    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        x = v1.placeholder(tf.float32, [4, 4])
        y = tf.matmul(x, x, name="square")
    metadata = v1.RunMetadata()
    with v1.Session(graph=graph) as sess:
        sess.run(y, {x: [[1.0] * 4] * 4},
                 options=v1.RunOptions(trace_level=v1.RunOptions.FULL_TRACE),
                 run_metadata=metadata)
    # a transfer as a remote ps reports it, added to the real trace
    remote = metadata.step_stats.dev_stats.add(device=PS_DEVICE)
    node = remote.node_stats.add(node_name="RecvTensor", all_start_micros=1_000_000,
                                 op_end_rel_micros=250, all_end_rel_micros=300)
    node.timeline_label = recv_label(4096)
    devices = step_stats(metadata)
    nodes = {n[0]: n for d in devices for n in d["nodes"]}
    assert "square" in nodes and nodes["square"][1].endswith("MatMul")  # _MklMatMul on x86
    assert nodes["square"][3] >= nodes["square"][2] > 0
    assert nodes["RecvTensor"][2:4] == [1_000_000, 1_000_300]
    assert devices[-1]["device"] == PS_DEVICE


# -- a dump with flight files: loading and analysis ----------------------------------------------


def test_a_dump_reads_the_flight_file_of_each_process(tmp_path: Path) -> None:
    dump = write_cluster_dump(tmp_path / "dump", error_line=QUIET)
    traces = [{"step": 290, "started": T0 - 31, "ended": T0 - 30.99, "devices": [
        {"device": WORKER_DEVICE, "nodes": [["w/read", "Identity", 1, 2, "w/read = Identity(w)"]]},
        {"device": PS_DEVICE, "nodes": [
            ["RecvTensor", "", int((T0 - 31) * 1e6), int((T0 - 31) * 1e6) + 900,
             recv_label(64 * 2**20)],
            ["RecvTensor", "", int((T0 - 31) * 1e6), int((T0 - 31) * 1e6) + 10,
             recv_label(1024, edge="edge_3_b/read")]]}]}]
    add_flight(dump, W0, flight_doc(
        steps_between(T0 - 60, T0 - 30, 0.1, 1), saving_since=[T0 - 29.5, 300, "/ckpt/model"],
        variables=[huge_variable(size=123), {"name": "b", "shape": [8], "dtype": "float32",
                                             "bytes": 32, "device": "/job:ps/task:0"}],
        traces=traces))
    loaded = postmortem.load(dump)
    assert loaded.flights["pid"].tolist() == [W0]
    assert len(loaded.flight_steps) == 300 and len(loaded.flight_ops) == 3
    incident = postmortem.analyze(loaded)
    (record,) = incident.flights
    assert record.role == "worker:0" and record.source == layout.flight_file(W0)
    assert record.typical_step_s == pytest.approx(0.01)
    assert record.steps_stopped == pytest.approx(T0 - 30 + 0.01 - 0.1, abs=0.11)
    save = record.open_save
    assert save is not None and save.global_step == 300
    assert save.seconds == pytest.approx(T0 + 2.1 - (T0 - 29.5))  # to the capture's end
    (transfer,) = record.transfers
    assert (transfer.count, transfer.largest_bytes) == (2, 64 * 2**20)
    assert transfer.source_device == PS_DEVICE and "edge_9_w/read" in transfer.largest_edge
    trace = record.last_trace
    assert trace is not None and trace.global_step == 290
    assert {op.role for op in trace.ops} == {"worker:0", "ps:0"}
    assert record.saver_sharded is False and record.operation_timeout_ms == 0
    # the verdict (a stopped ps) now says how long the save has waited, from the recorder
    top = incident.verdict.finding
    assert top.hang_class is HangClass.PEER_UNRESPONSIVE
    assert any("a save at global step 300 began and had not ended 32s later" in e.what
               for e in top.evidence)
    assert any(r.what.startswith("the sessions of worker:0 have no deadline")
               for r in incident.risks)


@pytest.mark.parametrize("content", [
    "not json", "[]", json.dumps({"format": "something-else"}),
    json.dumps({"format": "postmortem-flight", "steps": "many", "traces": [{"devices": 5}],
                "events": [7, {"kind": 3, "time": "now"}], "inventory": {"variables": [
                    {"name": ["x"], "bytes": "big", "shape": "2x2"}], "savers": [None]},
                "current_step": {"a": 1}, "saving_since": ["soon"]}),
    json.dumps({"format": "postmortem-flight", "steps": [[1e400, None, None, True], ["x"]],
                "traces": [{"devices": [{"device": {}, "nodes": [[1, 2, "a", None, 5]]}]}]}),
])
def test_a_damaged_flight_file_is_a_problem_never_a_crash(tmp_path: Path, content: str) -> None:
    dump = write_cluster_dump(tmp_path / "dump", error_line=QUIET)
    add_flight(dump, W0, content)
    loaded = postmortem.load(dump)
    incident = postmortem.analyze(loaded)
    assert incident.verdict.finding.hang_class is HangClass.PEER_UNRESPONSIVE  # still judged
    problems = {p.file for p in incident.load_problems}
    if content in ("not json", "[]") or "something-else" in content:
        assert layout.flight_file(W0) in problems


def test_a_flight_file_alone_shows_a_job_that_logs_nothing_training(tmp_path: Path) -> None:
    # GIVEN no log line and idle-looking threads, and a recorder whose steps end during the
    # capture THEN healthy, from the recorder; and its steps stopping long ago is no progress
    def judged(steps: list[list[Any]], written: float) -> tuple[str, list[str]]:
        root = tmp_path / f"dump-{len(steps)}"
        dump = quiet_cluster(root)
        add_flight(dump, W0, flight_doc(steps, sharded=True, written=written))
        incident = postmortem.analyze(postmortem.load(dump))
        return incident.verdict.hang_class.value, [p.source for p in incident.progress if p.moved]

    got, moved = judged(steps_between(T0 - 30, T0 + 2, 0.05), T0 + 2)
    assert got == "healthy" and moved == [layout.flight_file(W0)]
    got, moved = judged(steps_between(T0 - 300, T0 - 120, 0.05), T0 - 120)
    assert got != "healthy" and moved == []


def test_the_inventory_decides_an_oversized_save_that_printed_nothing(tmp_path: Path) -> None:
    # GIVEN a save stuck with no error in any log, and the recorder's inventory: a 2.16 GiB
    # variable on ps:0 and a saver that is not sharded, a save open for a minute
    def judged(name: str, **doc: Any) -> dict[str, Any]:
        dump = quiet_cluster(tmp_path / name)
        fields: dict[str, Any] = {"variables": [huge_variable()],
                                  "saving_since": [T0 - 60, 300, "/ckpt/model"], **doc}
        add_flight(dump, W0, flight_doc(steps_between(T0 - 90, T0 - 60, 0.1), **fields))
        return verdict(dump)

    found = judged("hit")
    assert found["hang_class"] == "oversized-tensor-transfer"
    assert found["culprit"]["role"] == "ps:0" and "huge_embedding" in found["blocking_op"]
    # near misses: a sharded saver; the variable on the worker; under 2 GiB
    for name, doc in (("sharded", {"sharded": True}),
                      ("on-worker", {"variables": [huge_variable("/job:worker/task:0")]}),
                      ("small", {"variables": [huge_variable(size=2**31 - 1)]})):
        assert judged(name, **doc)["hang_class"] != "oversized-tensor-transfer", name


def record(**overrides: Any) -> FlightRecord:
    base = FlightRecord(
        pid=20, role="worker:0", source=layout.flight_file(20), started=T0 - 600,
        written=T0, steps=(RecordedStep(T0 - 100, 0.01, 5, False),), typical_step_s=0.01,
        steps_stopped=None, running_step=None, saves=(), stalls=(), traces=(), transfers=(),
        variables=(), variable_count=0, variable_bytes=0, saver_sharded=False,
        saver_devices=("/job:worker/task:0",), sync_replicas=None, replicas_to_aggregate=None,
        operation_timeout_ms=0)
    return replace(base, **overrides)


def test_the_oversized_rule_on_inventory_alone_wants_a_save_that_does_not_end(
        tmp_path: Path) -> None:
    big = RecordedVariable("emb", "540000000x1", "float32", int(2.16 * GIB), "/job:ps/task:0",
                           "ps:0")
    running = RecordedSave(T0 - 60, None, 62.0, 300, "/ckpt")
    idle = hand_facts(tmp_path / "a", [PS0, W0_MEMBER], flights=[record(variables=(big,))])
    assert oversized_tensor.evaluate(idle) == []  # a risk, listed by the incident
    assert flight_facts.risks([record(variables=(big,))])[0].what.startswith("`emb` (2.16 GiB")
    open_save = hand_facts(tmp_path / "b", [PS0, W0_MEMBER],
                           flights=[record(variables=(big,), saves=(running,))])
    (finding,) = oversized_tensor.evaluate(open_save)
    assert finding.culprit is not None and finding.culprit.role == "ps:0"
    stuck = hand_facts(tmp_path / "c", [PS0, W0_MEMBER], flights=[record(variables=(big,))],
                       threads=[thread(W0_MEMBER, SAVE, Status.STUCK)])
    assert oversized_tensor.evaluate(stuck)[0].confidence >= 0.7


# -- drawing it ----------------------------------------------------------------------------------


def test_the_report_and_chrome_trace_draw_the_recorded_steps(tmp_path: Path) -> None:
    from postmortem.report import render_html

    dump = write_cluster_dump(tmp_path / "dump", error_line=QUIET)
    add_recorded_save(dump)
    incident = postmortem.analyze(postmortem.load(dump))
    page = render_html(incident)
    assert 'data-figure="steptimes"' in page and 'data-figure="tracedstep"' in page
    assert "RecvTensor transfer" in page
    document = chrome_trace.trace_document(incident)
    recorded = [e for e in document["traceEvents"] if e.get("cat") == "flight,step_stats"]
    assert {(e["name"], e["dur"]) for e in recorded} == {("RecvTensor", 500.0), ("MatMul", 200.0)}
    assert next(e for e in recorded if e["name"] == "RecvTensor")["args"]["bytes"] == 4096
    saves = [e for e in document["traceEvents"] if e.get("cat") == "flight,save"]
    assert saves and saves[0]["name"] == "save (never ended)"
    assert chrome_trace.CHROME_TRACE.draw(incident, RenderOptions()).startswith("{")


def test_without_a_recorder_the_report_says_how_to_get_one(tmp_path: Path) -> None:
    from postmortem.report import render_html

    dump = write_cluster_dump(tmp_path / "d", error_line=QUIET)
    page = render_html(postmortem.analyze(postmortem.load(dump)))
    assert 'data-figure-absent="steptimes"' in page and "postmortem.recorder" in page


# -- how a capture finds and copies it -------------------------------------------------------------


def test_capture_finds_a_flight_directory_by_env_or_default_path(tmp_path: Path) -> None:
    pid = os.getpid()
    base = tmp_path / "flights"
    (base / f"worker-3-{pid}").mkdir(parents=True)
    (base / "worker-3-1").mkdir()  # another process's
    found = flight_collector.find_dir(pid, [], {"POSTMORTEM_FLIGHT_DIR": str(base)})
    assert found == f"/proc/{pid}/root{base}/worker-3-{pid}"  # read as the job sees its files
    tmp = tmp_path / "tmp"
    (tmp / "postmortem-flight" / f"ps-0-{pid}").mkdir(parents=True)
    assert flight_collector.find_dir(pid, [], {"TMPDIR": str(tmp)}) == (
        f"/proc/{pid}/root{tmp}/postmortem-flight/ps-0-{pid}")
    assert flight_collector.find_dir(pid, [], {"TMPDIR": str(tmp_path / "none")}) is None


def test_capture_refuses_a_flight_file_past_its_bound(tmp_path: Path) -> None:
    (tmp_path / "flight.json").write_bytes(b"{}")
    assert flight_collector.read(str(tmp_path)) == b"{}"
    with (tmp_path / "flight.json").open("wb") as handle:
        handle.truncate(flight_collector.LIMIT + 1)  # sparse: no disk used
    with pytest.raises(OSError, match="larger than"):
        flight_collector.read(str(tmp_path))


def test_importing_the_recorder_loads_no_heavy_library() -> None:
    # A job imports it at start: it must not bring the analysis stack along.
    import subprocess
    import sys

    code = ("import sys, postmortem.recorder; "
            "print(sorted(m for m in ('pandas', 'plotly', 'rich', 'typer', 'numpy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"
