"""`postmortem demo` end to end through the real CLI: start a real TF cluster, inject the
fault, capture with `postmortem capture`, stop; then `postmortem analyze DUMP --json` must
name the class and culprit of the dump's truth.json, and the dump itself must show the hang
(stacks, /proc states, source lines), so a scenario that failed to hang cannot pass.

Run: python -m pytest tests/integration/test_demo.py -m slow -p no:cacheprovider
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postmortem.loading import load_dump

REPO = Path(__file__).resolve().parents[2]
FAILURES = Path(os.environ.get("POSTMORTEM_FAILURES_DIR", "/tmp/postmortem-variation-failures"))
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_PYSPY = shutil.which("py-spy") is not None
DEMO_TIMEOUT = 220  # the test allows 240
ESTABLISH_TIMEOUT = 150
ALL_SCENARIOS = (
    "ps-frozen-during-save", "oversized-variable-save", "sync-replicas-stall", "storage-stall",
    "saver-lock-deadlock", "ps-unreachable-at-startup", "healthy-slow-save",
    "healthy-training", "degraded-worker-lost", "mwms-partial-save", "mwms-healthy-training",
    "pss-ps-frozen-during-save", "mwms-peer-lost-during-save", "mwms-keras-fit-chief-save",
    "mwms-keras-fit-healthy",
)

live_demo = [
    pytest.mark.live, pytest.mark.slow, pytest.mark.ci, pytest.mark.timeout(240),
    pytest.mark.skipif(not (HAVE_TF and HAVE_PYSPY), reason="needs tensorflow and py-spy"),
]


def postmortem(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postmortem", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False)


# -- reading a dump ---------------------------------------------------------------------------
def rounds(dump: Path, pid: int) -> list[Path]:
    found = sorted((dump / "processes" / str(pid)).glob("round-*"))
    assert found, f"no capture rounds for pid {pid} in {dump}"
    return found


def pyspy_threads(round_dir: Path) -> list[dict[str, Any]]:
    path = round_dir / "pyspy.json"
    assert path.exists(), f"no {path}"
    data = json.loads(path.read_text())
    assert isinstance(data, list), f"{path}: {str(data)[:300]}"
    return data


def thread_named(threads: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in threads if t.get("thread_name") == name]
    assert found, f"no thread {name!r} in {[t.get('thread_name') for t in threads]}"
    return found[0]


def frame_names(t: dict[str, Any]) -> list[str]:
    return [f["name"] for f in t["frames"]]


def in_frame(t: dict[str, Any], name: str, file_suffix: str) -> bool:
    return any((f["name"] == name or f["name"].endswith("." + name))
               and f["filename"].endswith(file_suffix) for f in t["frames"])


def proc_states(dump: Path, pid: int) -> list[str]:
    return [json.loads((r / "procfs.json").read_text())["state"] for r in rounds(dump, pid)]


def source_line(dump: Path, pid: int, filename: str, line: int) -> str:
    return load_dump(dump).source_line(pid, filename, line)


# -- one demo ---------------------------------------------------------------------------------
def demo_and_analyze(
    name: str, tmp_path: Path, *set_args: str
) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    """`postmortem demo NAME -o DUMP [--set K=V...]`, then `postmortem analyze DUMP --json`;
    the verdict's class and culprit role must equal truth.json's. Returns (dump, truth,
    verdict doc)."""
    dump = tmp_path / "dump"
    sets = [arg for pair in set_args for arg in ("--set", pair)]
    demo = postmortem("demo", name, "-o", str(dump), "--timeout", str(ESTABLISH_TIMEOUT),
                      *sets, timeout=DEMO_TIMEOUT)
    assert demo.returncode == 0 and (dump / "truth.json").exists(), (
        f"demo {name} exit {demo.returncode}:\n{demo.stderr[-3000:]}")
    assert "Traceback" not in demo.stderr, demo.stderr[-3000:]
    assert f"next: postmortem analyze {dump}" in demo.stdout
    truth = json.loads((dump / "truth.json").read_text())
    assert truth["scenario"] == name
    out = postmortem("analyze", str(dump), "--json", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    doc = json.loads(out.stdout)
    v = doc["verdict"]
    got = (v["hang_class"], v["culprit"]["role"] if v["culprit"] else None)
    want = (truth["hang_class"], truth["culprit_role"])
    missing = [term for term in truth.get("op_terms", []) if term not in v["blocking_op"]]
    if got != want or missing:
        kept = FAILURES / f"demo-{name}"
        if kept.exists():
            shutil.rmtree(kept)
        shutil.copytree(dump, kept)
        (kept / "analyzer.json").write_text(json.dumps(doc, indent=1) + "\n")
        print(json.dumps(doc, indent=1))
        pytest.fail(f"ANALYZER: expected {want}, got {got}; blocking op {v['blocking_op']!r} "
                    f"lacks {missing}; dump kept at {kept}")
    assert v["summary"] and v["fix"]
    return dump, truth, doc


def keep_on_failure(name: str, dump: Path) -> Path:
    kept = FAILURES / f"demo-{name}"
    if kept.exists():
        shutil.rmtree(kept)
    shutil.copytree(dump, kept)
    return kept


# -- live -------------------------------------------------------------------------------------
def _apply(marks: list[pytest.MarkDecorator]) -> Any:
    def wrap(fn: Any) -> Any:
        for mark in marks:
            fn = mark(fn)
        return fn
    return wrap


@_apply(live_demo)
def test_demo_ps_frozen_during_save(tmp_path: Path) -> None:
    dump, truth, _doc = demo_and_analyze("ps-frozen-during-save", tmp_path)
    roles = truth["all_roles"]
    culprit = truth["culprit_role"]
    try:
        # THEN in the dump: the ps is stopped in every round ...
        assert set(proc_states(dump, roles[culprit])) == {"T"}, proc_states(dump, roles[culprit])
        # ... and the chief's main thread is inside Saver.save -> session.run in every round
        for r in rounds(dump, roles["worker:0"]):
            main = thread_named(pyspy_threads(r), "MainThread")
            assert "Saver.save" in frame_names(main), (r, frame_names(main))
            assert in_frame(main, "run", "client/session.py"), (r, frame_names(main))
    except AssertionError as e:
        raise AssertionError(f"{e}\ndump kept at {keep_on_failure('ps-frozen', dump)}") from e


@_apply(live_demo)
def test_demo_sync_replicas_stall(tmp_path: Path) -> None:
    dump, truth, _doc = demo_and_analyze("sync-replicas-stall", tmp_path)
    roles = truth["all_roles"]
    culprit = truth["culprit_role"]
    try:
        # THEN the culprit replica is stopped in every round ...
        assert set(proc_states(dump, roles[culprit])) == {"T"}, proc_states(dump, roles[culprit])
        # ... and the chief's main thread waits in session.run (the train step), not a save
        for r in rounds(dump, roles["worker:0"]):
            main = thread_named(pyspy_threads(r), "MainThread")
            assert in_frame(main, "run", "client/session.py"), (r, frame_names(main))
            assert "Saver.save" not in frame_names(main), (r, frame_names(main))
    except AssertionError as e:
        raise AssertionError(f"{e}\ndump kept at {keep_on_failure('sync', dump)}") from e


@_apply(live_demo)
def test_demo_mwms_partial_save(tmp_path: Path) -> None:
    dump, truth, doc = demo_and_analyze("mwms-partial-save", tmp_path)
    roles = truth["all_roles"]
    assert truth["strategy"] == "MultiWorkerMirroredStrategy"
    try:
        # THEN in every round the saver is inside Checkpoint.save and a thread of it inside
        # the all-reduce, while the worker that skipped the save has no collective frame
        for r in rounds(dump, roles["worker:0"]):
            threads = pyspy_threads(r)
            assert "Checkpoint.save" in frame_names(thread_named(threads, "MainThread")), r
            assert any("collective_reduce_v2" in frame_names(t) for t in threads), r
        for r in rounds(dump, roles["worker:1"]):
            assert not any("collective" in " ".join(frame_names(t)).lower()
                           for t in pyspy_threads(r)), r
        # ... and the wait-for graph has the saver waiting on the worker that skipped
        first = doc["wait_for"][0]
        assert [w["role"] for w in first["waiters"]] == ["worker:0"]
        assert first["waits_on"] == ["worker:1"]
    except AssertionError as e:
        raise AssertionError(f"{e}\ndump kept at {keep_on_failure('mwms', dump)}") from e


@_apply(live_demo)
def test_demo_mwms_keras_fit_chief_save(tmp_path: Path) -> None:
    # GIVEN tf_keras fit under MWMS, ModelCheckpoint on worker:0 alone, a sidecar evaluator
    dump, truth, doc = demo_and_analyze("mwms-keras-fit-chief-save", tmp_path, "evaluator=true")
    try:
        # THEN both workers ended, their logs are in the dump with TF's abort in each
        assert set(truth["all_roles"]) == {"worker:0", "worker:1", "evaluator:0"}
        logs = [p.read_text() for p in sorted((dump / "logs").iterdir())]
        assert len(logs) == 2
        assert all("Shape mismatch in the collective instance" in text for text in logs)
        # ... the evaluator was captured live, and it is a member but never a suspect
        manifest = json.loads((dump / "manifest.json").read_text())
        assert [t["pid"] for t in manifest["targets"]] == [truth["all_roles"]["evaluator:0"]]
        members = {m["role"]: m for m in doc["members"]}
        assert members["evaluator:0"]["pid"] == truth["all_roles"]["evaluator:0"]
        assert members["evaluator:0"]["collective"] == ""
    except AssertionError as e:
        raise AssertionError(f"{e}\ndump kept at {keep_on_failure('keras', dump)}") from e


@_apply(live_demo)
def test_demo_saver_lock_deadlock(tmp_path: Path) -> None:
    dump, truth, _doc = demo_and_analyze("saver-lock-deadlock", tmp_path)
    pid = truth["all_roles"]["worker:0"]
    saver_name = truth["params"]["saver_thread_name"]
    try:
        # THEN in every round, the main thread and the saver thread stand at `with LOCK:`
        # lines (from the dump's own sources.json) of two different locks
        for r in rounds(dump, pid):
            threads = pyspy_threads(r)
            locks = []
            for name in ("MainThread", saver_name):
                top = thread_named(threads, name)["frames"][0]
                text = source_line(dump, pid, top["filename"], top["line"]).strip()
                found = re.fullmatch(r"with (\w+):.*", text)
                assert found, f"{r.name} {name} at {top['filename']}:{top['line']} {text!r}"
                locks.append(found.group(1))
            assert locks[0] != locks[1], (r.name, locks)
    except AssertionError as e:
        raise AssertionError(f"{e}\ndump kept at {keep_on_failure('lock', dump)}") from e


# -- fast (no TF) -----------------------------------------------------------------------------
def test_demo_list_names_every_scenario() -> None:
    out = postmortem("demo", "--list")
    assert out.returncode == 0, out.stderr
    listed = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    assert sorted(listed) == sorted(ALL_SCENARIOS)


def test_demo_unknown_scenario_is_a_clear_error(tmp_path: Path) -> None:
    out = postmortem("demo", "no-such-scenario", "-o", str(tmp_path / "dump"))
    assert out.returncode != 0
    assert "unknown scenario 'no-such-scenario'" in out.stderr
    assert "ps-frozen-during-save" in out.stderr  # it lists the known ones
    assert "Traceback" not in out.stderr + out.stdout
    assert not (tmp_path / "dump").exists()
