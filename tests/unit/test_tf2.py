"""TF2 strategies: the stacks and log lines of MultiWorkerMirroredStrategy and
ParameterServerStrategy jobs, as tensorflow-cpu 2.21 prints them (recorded with py-spy
0.4.3 from real jobs on this machine), and what the analysis makes of them."""

from __future__ import annotations

import pytest

from postmortem.analysis.logs import read_log
from postmortem.analysis.threads import in_collective, in_save, in_tf_op, is_save_frame
from postmortem.model import Frame, Stack

TF = "/venv/lib/python3.11/site-packages/tensorflow/python"
POOL = "/usr/lib/python3.11/multiprocessing/pool.py"


def stack(*frames: tuple[str, str, int]) -> Stack:
    """Innermost first, as py-spy prints them."""
    return Stack(tuple(Frame(name, path, line) for name, path, line in frames))


# MWMS, chief-only Checkpoint.save: the saver's MainThread and its all-reduce pool thread.
SAVER_MAIN = stack(
    ("Condition.wait", "/usr/lib/python3.11/threading.py", 327),
    ("Event.wait", "/usr/lib/python3.11/threading.py", 629),
    ("ApplyResult.wait", POOL, 765),
    ("ApplyResult.get", POOL, 768),
    ("Pool.map", POOL, 367),
    ("CollectiveAllReduce._all_reduce_per_replica_values",
     f"{TF}/distribute/cross_device_ops.py", 1208),
    ("CollectiveAllReduce.reduce_implementation", f"{TF}/distribute/cross_device_ops.py", 1226),
    ("CrossDeviceOps.reduce", f"{TF}/distribute/cross_device_ops.py", 320),
    ("StrategyBase.reduce", f"{TF}/distribute/distribute_lib.py", 1785),
    ("SyncOnReadVariable._get_cross_replica", f"{TF}/distribute/values.py", 1423),
    ("TrackableSaver.save", f"{TF}/checkpoint/checkpoint.py", 1356),
    ("Checkpoint._write", f"{TF}/checkpoint/checkpoint.py", 2369),
    ("Checkpoint.save", f"{TF}/checkpoint/checkpoint.py", 2533),
    ("<module>", "/job/train.py", 37),
)
SAVER_POOL = stack(
    ("collective_reduce_v2", f"{TF}/ops/gen_collective_ops.py", 1267),
    ("all_reduce_v2", f"{TF}/ops/collective_ops.py", 145),
    ("CollectiveReplicaLauncher.all_reduce", f"{TF}/distribute/cross_device_utils.py", 373),
    ("CollectiveReplicaLauncher.batch_all_reduce", f"{TF}/distribute/cross_device_utils.py", 432),
    ("CollectiveAllReduce._all_reduce", f"{TF}/distribute/cross_device_ops.py", 1160),
    ("mapstar", POOL, 48),
    ("worker", POOL, 125),
)
PEER_ELSEWHERE = stack(("<module>", "/job/train.py", 44))
# PSS coordinator, a ps stopped: the eager op that creates the save counter on the ps.
PSS_COORDINATOR = stack(
    ("var_handle_op", f"{TF}/ops/gen_resource_variable_ops.py", 1340),
    ("_variable_handle_from_shape_and_dtype", f"{TF}/ops/resource_variable_ops.py", 175),
    ("Checkpoint._maybe_create_save_counter", f"{TF}/checkpoint/checkpoint.py", 2330),
    ("Checkpoint.save", f"{TF}/checkpoint/checkpoint.py", 2520),
    ("main", "/job/coordinator.py", 80),
)
# A healthy TF2 step: a tf.function call, in the runtime but not a collective frame.
TF_FUNCTION_STEP = stack(
    ("quick_execute", f"{TF}/eager/execute.py", 53),
    ("ConcreteFunction._call_flat", f"{TF}/eager/polymorphic_function/concrete_function.py", 1322),
    ("Function.__call__", f"{TF}/eager/polymorphic_function/polymorphic_function.py", 833),
    ("<module>", "/job/train.py", 30),
)


def test_a_save_that_all_reduces_is_a_collective_wait_under_a_save() -> None:
    assert in_collective(SAVER_MAIN) and in_save(SAVER_MAIN, Stack())
    assert in_collective(SAVER_POOL) and not in_save(SAVER_POOL, Stack())


def test_a_peer_elsewhere_and_a_tf_function_step_are_not_collectives() -> None:
    assert not in_collective(PEER_ELSEWHERE)
    assert not in_collective(TF_FUNCTION_STEP)
    assert in_tf_op(TF_FUNCTION_STEP) and not in_tf_op(PEER_ELSEWHERE)


def test_an_eager_remote_op_under_checkpoint_save_is_a_tf_op_in_a_save() -> None:
    assert in_tf_op(PSS_COORDINATOR) and in_save(PSS_COORDINATOR, Stack())
    assert not in_collective(PSS_COORDINATOR)


@pytest.mark.parametrize(
    ("function", "path", "saves"),
    [
        ("Model.save_weights", "/site-packages/tf_keras/src/engine/training.py", True),
        ("Model.save", "/site-packages/keras/src/models/model.py", True),
        ("save_model", "/site-packages/keras/src/saving/saving_api.py", True),
        ("CheckpointManager.save", f"{TF}/checkpoint/checkpoint_management.py", True),
        ("Model.save_spec", "/site-packages/tf_keras/src/engine/training.py", False),
        ("save_weights", "/job/my_code.py", False),  # the user's own function, not Keras'
    ],
)
def test_keras_and_manager_saves_are_saves(function: str, path: str, saves: bool) -> None:
    assert is_save_frame(Frame(function, path, 1)) is saves


@pytest.mark.parametrize(
    ("lines", "device"),
    [
        (["E1124 tensorflow/core/common_runtime/base_collective_executor.cc] The following "
          "tasks are unhealthy (stopped sending heartbeats):",
          "/job:worker/replica:0/task:1", "The tasks have crashed."],
         "/job:worker/replica:0/task:1"),
        (["UnavailableError: The following tasks are unhealthy (stopped sending heartbeats): "
          "/job:worker/replica:0/task:2"], "/job:worker/replica:0/task:2"),
        (["WARNING Parameter server failure detected at PS task 1"], "/job:ps/replica:0/task:1"),
        (["WARNING Worker /job:worker/replica:0/task:0 failed with UnavailableError()"],
         "/job:worker/replica:0/task:0"),
    ],
)
def test_tf2_runtimes_name_the_task_they_lost(lines: list[str], device: str) -> None:
    facts = read_log("worker:0", 1, "processes/1/logs/stderr.txt", lines)
    assert list(facts.lost_tasks) == [device]


def test_lines_that_only_mention_heartbeats_name_no_task() -> None:
    facts = read_log("worker:0", 1, "x", ["INFO heartbeat every 10s to /job:worker/task:1",
                                          "step 10 failed with nothing"])
    assert facts.lost_tasks == {}


# -- the recorded samples, changed the way other incidents differ -----------------------------
import json  # noqa: E402
import shutil  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import postmortem  # noqa: E402
from postmortem.report import render_html  # noqa: E402
from tests.conftest import SAMPLES, verdict  # noqa: E402

SAVER, SKIPPER = 6271, 6272  # worker:0 and worker:1 of samples/mwms-partial-save
COLLECTIVE_FRAMES = [
    {"name": "collective_reduce_v2", "filename": f"{TF}/ops/gen_collective_ops.py", "line": 1267},
    {"name": "all_reduce_v2", "filename": f"{TF}/ops/collective_ops.py", "line": 145},
]


def _mwms(tmp_path: Path) -> Path:
    copy = tmp_path / "dump"
    shutil.copytree(SAMPLES / "mwms-partial-save", copy)
    (copy / "truth.json").unlink()
    return copy


def _edit(dump: Path, pid: int, name: str, change: Any) -> None:
    for path in sorted((dump / "processes" / str(pid)).glob(f"round-*/{name}")):
        data = json.loads(path.read_text())
        change(data)
        path.write_text(json.dumps(data))


def test_the_sample_names_the_worker_that_never_joins(tmp_path: Path) -> None:
    incident = postmortem.analyze(postmortem.load(_mwms(tmp_path)))
    found = incident.verdict.finding
    assert found.hang_class.value == "collective-mismatch"
    assert found.culprit is not None and found.culprit.role == "worker:1"
    edges = [(a, b) for e in incident.wait_for for a, b, _ in e.pairs()]
    assert edges == [("worker:0", "worker:1")]


def test_a_peer_inside_a_collective_too_is_not_the_culprit(tmp_path: Path) -> None:
    # GIVEN the worker that skipped the save waiting in a collective of its own (another one)
    dump = _mwms(tmp_path)

    def in_collective(threads: list[dict[str, Any]]) -> None:
        main = next(t for t in threads if t["thread_name"] == "MainThread")
        main["frames"] = COLLECTIVE_FRAMES + main["frames"]

    _edit(dump, SKIPPER, "pyspy.json", in_collective)
    # THEN nobody is outside the collectives: not this class
    assert verdict(dump)["hang_class"] != "collective-mismatch"


def test_a_stopped_peer_is_unresponsive_not_a_mismatch(tmp_path: Path) -> None:
    dump = _mwms(tmp_path)

    def stopped(data: dict[str, Any]) -> None:
        data["state"] = "T"
        for t in data.get("threads", []):
            t["state"] = "T"

    _edit(dump, SKIPPER, "procfs.json", stopped)
    got = verdict(dump)
    assert (got["hang_class"], got["culprit"]["role"]) == ("peer-unresponsive", "worker:1")


def test_a_save_whose_collective_moves_is_not_stuck(tmp_path: Path) -> None:
    # GIVEN the saver's threads seen in a different place in each round (it progresses)
    dump = _mwms(tmp_path)
    rounds = iter(range(100))

    def moved(threads: list[dict[str, Any]]) -> None:
        shift = next(rounds)
        for t in threads:
            for frame in t["frames"][:1]:
                frame["line"] = frame["line"] + shift

    _edit(dump, SAVER, "pyspy.json", moved)
    assert verdict(dump)["hang_class"] != "collective-mismatch"


def test_a_dump_of_logs_alone_names_the_task_a_crashed_job_lost(
    tmp_path: Path, capsys: Any
) -> None:
    # GIVEN the log of an MWMS worker that crashed when its peer was lost (no process left)
    from postmortem.cli import main

    log = tmp_path / "worker-0.log"
    log.write_text(
        "2026-11-24 01:11:31,059 7986 MainThread ERROR save failed 40\n"
        "tensorflow.python.framework.errors_impl.UnavailableError: Collective ops is aborted "
        "by: Error reported from /job:worker/task:1: The following tasks are unhealthy "
        "(stopped sending heartbeats):\n/job:worker/replica:0/task:1\n"
        "The tasks have crashed. Check the task logs for an earlier error.\n"
    )
    dump = tmp_path / "dump"
    # WHEN its log alone is captured and analyzed
    assert main(["capture", "--log", str(log), "-o", str(dump), "--samples", "1"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(dump), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["verdict"]
    # THEN the lost task is named, from the log the dump holds
    assert (got["hang_class"], got["culprit"]["role"]) == ("peer-unresponsive", "worker:1")
    # ... and with neither a pid nor a log, capture still refuses
    assert main(["capture", "-o", str(tmp_path / "none")]) == 2


def test_a_crashed_job_whose_peer_refused_connections_is_a_crash_not_a_retry_loop(
    tmp_path: Path, capsys: Any
) -> None:
    # GIVEN the log of a worker whose save's all-reduce hit a dead peer's closed port
    from postmortem.cli import main

    log = tmp_path / "worker-0.log"
    log.write_text(
        '  File "/tf/python/checkpoint/checkpoint.py", line 2533, in save\n'
        "tensorflow.python.framework.errors_impl.UnavailableError: Collective ops is aborted "
        "by: failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:45059: "
        "Failed to connect to remote host: Connection refused\n"
        "Additional GRPC error information from remote target /job:worker/replica:0/task:2 "
        "while calling /tensorflow.WorkerService/RecvBuf:\n"
    )
    dump = tmp_path / "dump"
    assert main(["capture", "--log", str(log), "-o", str(dump), "--samples", "1"]) == 0
    capsys.readouterr()
    assert main(["analyze", str(dump), "--json"]) == 0
    got = json.loads(capsys.readouterr().out)["verdict"]
    assert (got["hang_class"], got["culprit"]["role"]) == ("peer-unresponsive", "worker:2")
    assert "worker:2" in got["blocking_op"] and "retried" not in got["blocking_op"]
    assert "crashed" in got["summary"]


def test_a_dump_with_no_target_is_logs_only_only_when_it_says_so(
    tmp_path: Path, capsys: Any
) -> None:
    from postmortem.cli import main

    dump = tmp_path / "dump"
    shutil.copytree(SAMPLES / "mwms-peer-lost-during-save", dump)
    assert main(["analyze", str(dump), "--json"]) == 0  # logs_only: true, as capture wrote it
    manifest = json.loads((dump / "manifest.json").read_text())
    del manifest["logs_only"]  # as if its targets had been lost
    (dump / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["analyze", str(dump), "--json"]) == 10
    assert "no process could be loaded" in capsys.readouterr().err


def test_a_recovered_pss_worker_is_not_lost_and_a_traceback_counts_once() -> None:
    facts = read_log("chief:0", 1, "x", [
        "WARNING Worker /job:worker/replica:0/task:1 failed with UnavailableError()",
        "INFO Cluster now being recovered.",
        "INFO Worker /job:worker/replica:0/task:1 has been recovered.",
        "Traceback (most recent call last):",
        '  File "/tf/python/checkpoint/checkpoint.py", line 2533, in save',
        '  File "/tf/python/checkpoint/checkpoint.py", line 2369, in _write',
        '  File "/tf/python/checkpoint/checkpoint.py", line 1356, in save',
        "UnavailableError: ...",
    ])
    assert facts.lost_tasks == {}
    assert facts.failed_saves == 1


def test_only_bare_task_lines_after_the_heartbeat_line_are_lost_tasks() -> None:
    facts = read_log("worker:0", 1, "x", [
        "The following tasks are unhealthy (stopped sending heartbeats):",
        "/job:worker/replica:0/task:2",
        "{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0}}",
    ])
    assert list(facts.lost_tasks) == ["/job:worker/replica:0/task:2"]


def test_an_eager_op_is_seen_under_native_frames() -> None:
    native = Frame("pthread_cond_wait", "libc.so.6", 0, native=True)
    assert in_tf_op(Stack((native, *PSS_COORDINATOR.frames)))
    assert not in_tf_op(Stack((native, *PEER_ELSEWHERE.frames)))


def test_a_peer_busy_in_the_tf_runtime_is_slow_not_absent(tmp_path: Path) -> None:
    # GIVEN the worker that "skipped" is in fact inside an eager op (its input pipeline)
    dump = _mwms(tmp_path)

    def in_an_op(threads: list[dict[str, Any]]) -> None:
        main = next(t for t in threads if t["thread_name"] == "MainThread")
        main["frames"] = [{"name": "iterator_get_next",
                           "filename": f"{TF}/ops/gen_dataset_ops.py", "line": 3086},
                          *main["frames"]]

    _edit(dump, SKIPPER, "pyspy.json", in_an_op)
    # THEN it may yet reach the collective: no culprit is blamed for never joining it
    assert verdict(dump)["hang_class"] != "collective-mismatch"


# -- tf_keras fit with a chief-only ModelCheckpoint: TF aborts every worker ---------------------
KERAS_FIT = "mwms-keras-fit-chief-save"  # worker logs (ended) + a live sidecar evaluator


def _keras_fit(tmp_path: Path) -> Path:
    copy = tmp_path / "dump"
    shutil.copytree(SAMPLES / KERAS_FIT, copy)
    (copy / "truth.json").unlink()
    return copy


def _worker_logs(dump: Path) -> dict[str, Path]:
    """task -> the --log file of the worker that wrote it, as its MWMS line says."""
    out = {}
    for path in sorted((dump / "logs").iterdir()):
        facts = read_log("log", None, path.name, path.read_text().splitlines())
        assert facts.own_task is not None
        out[facts.own_task] = path
    return out


def test_a_workers_log_says_whose_it_is_and_how_its_collective_failed() -> None:
    logs = _worker_logs(SAMPLES / KERAS_FIT)
    saver = read_log("log", None, "w0", logs["worker:0"].read_text().splitlines())
    stepper = read_log("log", None, "w1", logs["worker:1"].read_text().splitlines())
    assert saver.task == "worker:0" and stepper.task == "worker:1"
    assert saver.collective_mismatch and stepper.collective_mismatch
    # the save's all-reduce ran eagerly; the other worker's inside its train function
    assert saver.mismatch_outside_function is True
    assert stepper.mismatch_outside_function is False


def test_the_worker_that_went_on_training_is_the_culprit_not_the_evaluator(
    tmp_path: Path,
) -> None:
    incident = postmortem.analyze(postmortem.load(_keras_fit(tmp_path)))
    found = incident.verdict.finding
    assert found.hang_class.value == "collective-mismatch"
    assert found.culprit is not None and found.culprit.role == "worker:1"
    assert incident.strategy is not None and incident.strategy.value == (
        "MultiWorkerMirroredStrategy"
    )
    # the evaluator is a member of the job, alive and outside every collective: not blamed
    assert "evaluator:0" in {m.role for m in incident.members}
    assert all(f.culprit is None or f.culprit.role != "evaluator:0"
               for f in incident.verdict.findings)


def test_the_culprit_follows_the_logs_not_the_task_numbers(tmp_path: Path) -> None:
    # GIVEN the same incident with worker:1 the saver and worker:0 the one that went on
    dump = _keras_fit(tmp_path)
    logs = _worker_logs(dump)
    for path, old, new in ((logs["worker:0"], "0", "1"), (logs["worker:1"], "1", "0")):
        text = path.read_text().replace(f"task_id = {old}", f"task_id = {new}")
        path.write_text(text)
    got = verdict(dump)
    assert (got["hang_class"], got["culprit"]["role"]) == ("collective-mismatch", "worker:0")


def test_the_savers_log_alone_still_names_the_other_worker(tmp_path: Path) -> None:
    # GIVEN only the chief's log (the other worker's was lost); the evaluator's TF_CONFIG
    # lists both workers
    dump = _keras_fit(tmp_path)
    logs = _worker_logs(dump)
    logs["worker:1"].write_text("")
    got = verdict(dump)
    assert (got["hang_class"], got["culprit"]["role"]) == ("collective-mismatch", "worker:1")


def test_a_shape_mismatch_with_no_failed_op_named_is_not_judged_a_mismatch(
    tmp_path: Path,
) -> None:
    # GIVEN the abort lines but no "[Op:...]" line saying which op failed on either side
    dump = _keras_fit(tmp_path)
    for path in _worker_logs(dump).values():
        kept = [line for line in path.read_text().splitlines() if "[Op:" not in line]
        path.write_text("\n".join(kept) + "\n")
    assert verdict(dump)["hang_class"] != "collective-mismatch"


def test_the_savers_log_alone_with_no_cluster_known_names_no_culprit(
    tmp_path: Path, capsys: Any
) -> None:
    from postmortem.cli import main

    dump = tmp_path / "dump"
    saver = _worker_logs(SAMPLES / KERAS_FIT)["worker:0"]
    assert main(["capture", "--log", str(saver), "-o", str(dump), "--samples", "1"]) == 0
    capsys.readouterr()
    got = verdict(dump)
    # the class is known from the saver's log; who did not join is not
    assert got["hang_class"] == "collective-mismatch" and got["culprit"] is None


def test_members_of_the_collective_group_are_marked_inside_or_outside(tmp_path: Path) -> None:
    incident = postmortem.analyze(postmortem.load(_mwms(tmp_path)))
    assert {m.role: m.collective for m in incident.members} == {
        "worker:0": "inside",
        "worker:1": "outside",
    }
    page = render_html(incident)
    assert "<th>collective</th>" in page and "in no collective" in page
    # a compat.v1 job runs no collective: nobody is marked
    v1 = postmortem.analyze(postmortem.load(SAMPLES / "ps-frozen-during-save"))
    assert all(m.collective == "" for m in v1.members)
    # the evaluator of a tf_keras job is no member of the group
    fit = postmortem.analyze(postmortem.load(_keras_fit(tmp_path / "fit")))
    assert next(m for m in fit.members if m.role == "evaluator:0").collective == ""


def test_a_peer_caught_in_its_own_save_is_on_its_way_not_elsewhere(tmp_path: Path) -> None:
    # GIVEN every worker saving (a healthy tf_keras job, ModelCheckpoint on each), one
    # captured once while already in the save's all-reduce, the other a moment before it,
    # still gathering what to save (found live: one capture round of a healthy job)
    dump = _mwms(tmp_path)

    def saving(threads: list[dict[str, Any]]) -> None:
        main = next(t for t in threads if t["thread_name"] == "MainThread")
        main["frames"] = [
            {"name": "saveable_objects_from_trackable",
             "filename": f"{TF}/training/saving/saveable_object_util.py", "line": 700},
            {"name": "TrackableSaver.save", "filename": f"{TF}/checkpoint/checkpoint.py",
             "line": 1356},
            {"name": "Checkpoint.save", "filename": f"{TF}/checkpoint/checkpoint.py",
             "line": 2533},
            *main["frames"],
        ]

    _edit(dump, SKIPPER, "pyspy.json", saving)
    # THEN not a mismatch: it is joining the same collective
    assert verdict(dump)["hang_class"] != "collective-mismatch"
