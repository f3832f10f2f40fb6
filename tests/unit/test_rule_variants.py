"""The rules on recorded dumps changed the way other incidents differ from our samples.

Each test takes a real sample, changes one fact the way another incident would show it
(a culprit that died and is absent from the dump, a stuck writer asleep instead of in D),
and checks that the verdict follows the evidence.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import verdict

SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def _copy(name: str, tmp_path: Path) -> Path:
    copy = tmp_path / "dump"
    shutil.copytree(SAMPLES / name, copy)
    (copy / "truth.json").unlink()
    return copy


def _manifest(dump: Path) -> dict[str, Any]:
    return json.loads((dump / "manifest.json").read_text())  # type: ignore[no-any-return]


def _pid_of(dump: Path, job: str, task: int) -> int:
    for target in _manifest(dump)["targets"]:
        cmdline = json.loads((dump / target["dir"] / "process.json").read_text())["cmdline"]
        if f"--job_name={job}" in cmdline and f"--task_index={task}" in cmdline:
            return int(target["pid"])
    raise AssertionError(f"no {job}:{task} in {dump}")


def _edit_procfs(dump: Path, change: Any) -> None:
    for procfs_file in dump.glob("processes/*/round-*/procfs.json"):
        data = json.loads(procfs_file.read_text())
        change(procfs_file, data)
        procfs_file.write_text(json.dumps(data))


def _drop_process(dump: Path, pid: int, address_port: int) -> None:
    """As if the process had died before the capture: absent, nothing listening."""
    manifest = _manifest(dump)
    manifest["targets"] = [t for t in manifest["targets"] if t["pid"] != pid]
    manifest["outcomes"] = [o for o in manifest["outcomes"] if o["target"] != str(pid)]
    (dump / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(dump / "processes" / str(pid))

    def forget(_: Path, data: dict[str, Any]) -> None:
        data["host_listening"] = [
            a for a in data.get("host_listening", []) if not a.endswith(f":{address_port}")
        ]
        data["sockets"] = [
            s for s in data["sockets"] if not str(s["remote"]).endswith(f":{address_port}")
        ]

    _edit_procfs(dump, forget)


def _port_of(dump: Path, job: str, task: int) -> int:
    pid = _pid_of(dump, job, task)
    cmdline = json.loads((dump / f"processes/{pid}/process.json").read_text())["cmdline"]
    hosts = next(a for a in cmdline if a.startswith(f"--{job}_hosts="))
    return int(hosts.split("=", 1)[1].split(",")[task].rsplit(":", 1)[1])


def test_dead_ps_absent_from_the_dump_is_still_the_culprit(tmp_path: Path) -> None:
    # GIVEN the frozen-ps incident, but the ps died instead and was not captured
    dump = _copy("ps-frozen-during-save", tmp_path)
    port = _port_of(dump, "ps", 0)
    _drop_process(dump, _pid_of(dump, "ps", 0), port)
    # WHEN analyzed
    found = verdict(dump)
    # THEN the worker's save waits on ps:0, which is not running
    assert found["hang_class"] == "peer-unresponsive"
    assert found["culprit"]["role"] == "ps:0"
    assert found["culprit"]["pid"] is None
    assert "not running" in found["culprit"]["state"]


def test_dead_replica_stalls_sync_training(tmp_path: Path) -> None:
    dump = _copy("sync-replicas-stall", tmp_path)
    port = _port_of(dump, "worker", 1)
    _drop_process(dump, _pid_of(dump, "worker", 1), port)
    found = verdict(dump)
    assert found["hang_class"] == "training-stalled"
    assert found["culprit"]["role"] == "worker:1"
    assert found["culprit"]["pid"] is None


@pytest.mark.parametrize("state", ["S", "D"])
def test_storage_stall_whether_the_writer_sleeps_or_is_in_d(tmp_path: Path, state: str) -> None:
    # GIVEN the FUSE stall; a writer that got no signal sleeps (S) in request_wait_answer
    dump = _copy("storage-stall", tmp_path)

    def wake(_: Path, data: dict[str, Any]) -> None:
        for thread in data["threads"]:
            if thread["state"] == "D":
                thread["state"] = state

    _edit_procfs(dump, wake)
    found = verdict(dump)
    assert found["hang_class"] == "storage-stall"
    assert found["culprit"]["role"] == "worker:0"


def test_a_writer_in_the_filesystem_that_keeps_writing_is_not_a_stall(tmp_path: Path) -> None:
    # GIVEN the slow-save sample with no Python stacks and no checkpoint listing: only a
    # writer waiting in FUSE every round, while the process's written bytes keep growing
    dump = _copy("healthy-slow-save", tmp_path)
    for pyspy in dump.glob("processes/*/round-*/pyspy*.json"):
        pyspy.write_text("[]")
    shutil.rmtree(dump / "checkpoint")
    manifest = _manifest(dump)
    manifest["checkpoint_dirs"] = []
    (dump / "manifest.json").write_text(json.dumps(manifest))
    found = verdict(dump)
    assert found["hang_class"] == "no-hang-found"
    assert found["culprit"] is None


def test_an_uncaptured_ps_that_listens_is_not_suspected(tmp_path: Path) -> None:
    # GIVEN a healthy slow save where only the worker was captured and no socket rows exist
    dump = _copy("healthy-slow-save", tmp_path)
    ps = _pid_of(dump, "ps", 0)
    manifest = _manifest(dump)
    manifest["targets"] = [t for t in manifest["targets"] if t["pid"] != ps]
    (dump / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(dump / "processes" / str(ps))
    _edit_procfs(dump, lambda _, data: data.update(sockets=[]))
    # THEN the ps, still listening on its port, is not blamed
    found = verdict(dump)
    assert found["hang_class"] == "save-progressing"


def test_session_creation_against_a_ps_not_running_needs_no_log(tmp_path: Path) -> None:
    dump = _copy("ps-unreachable-at-startup", tmp_path)
    for logs in dump.glob("processes/*/logs"):
        shutil.rmtree(logs)
    found = verdict(dump)
    assert found["hang_class"] == "peer-unreachable"
    assert found["culprit"]["role"] == "ps:0"


def test_a_stopped_ps_is_the_lead_even_without_worker_stacks(tmp_path: Path) -> None:
    dump = _copy("ps-frozen-during-save", tmp_path)
    worker = _pid_of(dump, "worker", 0)
    for pyspy in dump.glob(f"processes/{worker}/round-*/pyspy.json"):
        pyspy.write_text("")
    found = verdict(dump)
    assert found["hang_class"] == "peer-unresponsive"
    assert found["culprit"]["role"] == "ps:0"


def test_a_stopped_ps_outranks_a_stopped_replica(tmp_path: Path) -> None:
    # GIVEN the sync-replicas stall where the ps is frozen too
    dump = _copy("sync-replicas-stall", tmp_path)
    ps = _pid_of(dump, "ps", 0)

    def freeze(path: Path, data: dict[str, Any]) -> None:
        if path.parts[-3] == str(ps):
            data["state"] = "T"
            for thread in data["threads"]:
                thread["state"] = "T"

    _edit_procfs(dump, freeze)
    found = verdict(dump)
    assert found["culprit"]["role"] == "ps:0"
