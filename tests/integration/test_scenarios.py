"""Live scenarios: each starts a real TF cluster, waits for its hang, and checks the hang
with evidence the scenario itself did not produce (py-spy stacks, /proc states, sockets,
file sizes). After the context exits, no process of the run may be alive and no FUSE
mount may remain.

Run: python -m pytest tests/integration/test_scenarios.py -m slow -x -p no:cacheprovider
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from postmortem.model import HangClass
from postmortem.scenarios import SCENARIOS, ScenarioError, ScenarioRun, _procs, get_scenario

HAVE_TF = importlib.util.find_spec("tensorflow") is not None
HAVE_PYSPY = shutil.which("py-spy") is not None
HAVE_FUSE = (
    importlib.util.find_spec("fuse") is not None
    and shutil.which("fusermount3") is not None
    and os.path.exists("/dev/fuse")
)

F = TypeVar("F", bound=Callable[..., Any])


def live(fn: F) -> F:
    """A test that starts a real cluster: slow, live, and skipped without TF or py-spy."""
    for mark in (
        pytest.mark.slow,
        pytest.mark.live,
        pytest.mark.skipif(not (HAVE_TF and HAVE_PYSPY), reason="needs tensorflow and py-spy"),
    ):
        fn = mark(fn)
    return fn


needs_fuse = pytest.mark.skipif(not HAVE_FUSE, reason="needs fusepy, fusermount3, /dev/fuse")

ESTABLISH_TIMEOUT = 150


# -- helpers ---------------------------------------------------------------------------------
@contextmanager
def established(name: str, tmp_path: Path, **params: Any) -> Iterator[ScenarioRun]:
    """GIVEN scenario `name` started and its hang established; THEN on exit, nothing of
    the run is left: no process, no mount."""
    scenario = get_scenario(name)
    run = scenario.start(tmp_path / name, **params)
    with run:
        t0 = time.monotonic()
        run.wait_established(timeout=ESTABLISH_TIMEOUT)
        print(f"{name} {params or ''} established in {time.monotonic() - t0:.1f}s "
              f"(from launch {run.established_after:.1f}s); facts {run.facts}")
        ours = {**run.pids, **run.aux_pids}
        assert run.truth["hang_class"] == scenario.hang_class
        yield run
    assert run.cleanup_problems == []
    leftovers = [role for role, pid in ours.items() if _is_ours(pid, run.workdir)]
    assert leftovers == [], f"still alive after exit: {leftovers}"
    if run.fuse is not None:
        assert not _procs.mounted(run.fuse.mountpoint)


def _is_ours(pid: int, workdir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return str(workdir).encode() in cmdline and _procs.proc_state(pid) not in (None, "Z")


def py_spy(pid: int, nonblocking: bool = True) -> list[dict[str, Any]]:
    """`py-spy dump --json`: one dict per Python thread. --nonblocking is required for a
    stopped process or one with a thread in state D (a blocking dump never returns)."""
    argv = ["py-spy", "dump", "--json", "--pid", str(pid)]
    if nonblocking:
        argv.insert(2, "--nonblocking")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert out.stdout.strip().startswith("["), f"py-spy failed: {out.stdout}{out.stderr}"
    threads: list[dict[str, Any]] = json.loads(out.stdout)
    return threads


def thread(dump: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in dump if t.get("thread_name") == name]
    assert found, f"no thread {name!r} in {[t.get('thread_name') for t in dump]}"
    return found[0]


def frames(t: dict[str, Any]) -> list[tuple[str, str, int]]:
    """(function, filename, line), innermost first."""
    return [(f["name"], f["filename"], f["line"]) for f in t["frames"]]


def same_function(qualname: str, name: str) -> bool:
    """py-spy names frames by qualified name: "Saver.save", "main.<locals>.save_loop"."""
    return qualname == name or qualname.endswith("." + name)


def in_function(t: dict[str, Any], name: str, file_suffix: str) -> bool:
    return any(same_function(fn, name) and f.endswith(file_suffix) for fn, f, _ in frames(t))


def step_lines(run: ScenarioRun, role: str) -> list[str]:
    return re.findall(r"INFO step \d+ global_step \d+", run.log_text(role))


# -- fast checks of the API -------------------------------------------------------------------
def test_catalog_covers_every_hang_class_and_the_healthy_shapes() -> None:
    # every verdict but "cannot tell" has a scenario that produces it
    assert {s.hang_class for s in SCENARIOS.values()} == {
        c.value for c in HangClass if c is not HangClass.NO_HANG_FOUND
    }
    for name, s in SCENARIOS.items():
        assert s.name == name and s.description and "\n" not in s.description


def test_unknown_scenario_and_parameter_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="unknown scenario 'nope'"):
        get_scenario("nope")
    with pytest.raises(ScenarioError, match="no parameter"):
        get_scenario("ps-frozen-during-save").start(tmp_path, bogus=1)
    with pytest.raises(ScenarioError, match="not in a cluster"):
        get_scenario("ps-frozen-during-save").start(tmp_path, culprit="ps:3")
    with pytest.raises(ScenarioError, match="non-chief"):
        get_scenario("sync-replicas-stall").start(tmp_path, culprit="worker:0")
    with pytest.raises(ScenarioError, match="bad variable spec"):
        get_scenario("oversized-variable-save").start(tmp_path, vars=["w:1xA"])


# -- live scenarios ---------------------------------------------------------------------------
@live
@pytest.mark.ci
@pytest.mark.timeout(240)
def test_ps_frozen_during_save(tmp_path: Path) -> None:
    culprit = "ps:0"
    with established("ps-frozen-during-save", tmp_path) as run:
        # THEN the ps is stopped, and the chief's main thread sits in Saver.save
        assert _procs.proc_state(run.pids[culprit]) == "T"
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "save", "saver.py"), frames(main)
        assert in_function(main, "run", "session.py")
        # a stopped process can still be read without resuming it
        assert py_spy(run.pids[culprit]) and _procs.proc_state(run.pids[culprit]) == "T"
        assert "save done" not in run.log_text("worker:0")
        assert run.truth["culprit_role"] == culprit
        assert run.tf_servers.keys() == {"ps:0", "worker:0"}


@live
@pytest.mark.timeout(240)
def test_ps_frozen_on_second_ps_with_two_workers(tmp_path: Path) -> None:
    with established("ps-frozen-during-save", tmp_path, culprit="ps:1", num_ps=2,
                     num_workers=2) as run:
        assert _procs.proc_state(run.pids["ps:1"]) == "T"
        assert _procs.proc_state(run.pids["ps:0"]) != "T"
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "save", "saver.py"), frames(main)
        assert run.truth["culprit_role"] == "ps:1"


@live
@pytest.mark.timeout(240)
def test_ps_killed_during_save(tmp_path: Path) -> None:
    with established("ps-frozen-during-save", tmp_path, fault="kill") as run:
        # THEN the ps is gone from the run, and nothing listens at its address
        assert "ps:0" not in run.pids and run.all_roles["ps:0"] is None
        host, port = run.addresses["ps:0"].split(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
            pass
        log = run.log_text("worker:0")
        assert "save failed" in log and "/job:ps/replica:0/task:0" in log
        assert run.truth["culprit_role"] == "ps:0"


@live
@pytest.mark.timeout(300)
def test_oversized_variable_save(tmp_path: Path) -> None:
    with established("oversized-variable-save", tmp_path) as run:
        log = run.log_text("worker:0")
        assert "Cannot encode a Tensor that exceeds the 2GB protobuf limit" in log
        assert "test_weight1" in log
        # the ps really holds the >2 GiB variable in memory
        status = Path(f"/proc/{run.pids['ps:0']}/status").read_text()
        rss_kb = int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
        assert rss_kb * 1024 > 2 * 2**30
        # the chief is alive, retrying: still inside its save loop in main()
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "main", "supervisor_save.py"), frames(main)
        assert run.truth["culprit_role"] == "ps:0"


@live
@pytest.mark.ci
@pytest.mark.timeout(240)
def test_sync_replicas_stall(tmp_path: Path) -> None:
    with established("sync-replicas-stall", tmp_path) as run:
        assert _procs.proc_state(run.pids["worker:1"]) == "T"
        # THEN the chief's step counter stays frozen while checkpoints keep being saved
        steps_before = step_lines(run, "worker:0")
        saves_before = run.log_text("worker:0").count("Saving checkpoint to path")
        time.sleep(4)
        assert step_lines(run, "worker:0") == steps_before
        assert run.log_text("worker:0").count("Saving checkpoint to path") > saves_before
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "run", "session.py")
        assert not in_function(main, "save", "saver.py"), "the save is not what blocks"
        assert run.truth["culprit_role"] == "worker:1"


@live
@pytest.mark.timeout(240)
def test_sync_replicas_stall_with_dead_worker(tmp_path: Path) -> None:
    with established("sync-replicas-stall", tmp_path, fault="kill", num_workers=3,
                     culprit="worker:2") as run:
        assert run.all_roles["worker:2"] is None and "worker:2" not in run.pids
        steps_before = step_lines(run, "worker:0")
        time.sleep(3)
        assert step_lines(run, "worker:0") == steps_before
        assert run.truth["culprit_role"] == "worker:2"


@live
@needs_fuse
@pytest.mark.timeout(240)
def test_storage_stall(tmp_path: Path) -> None:
    with established("storage-stall", tmp_path) as run:
        pid = run.pids["worker:0"]
        # THEN a TF thread of the chief is in D, inside a FUSE write
        blocked = [t for t in _procs.threads(pid) if t.state == "D"]
        assert blocked, list(_procs.threads(pid))
        stack = Path(f"/proc/{pid}/task/{blocked[0].tid}/stack").read_text()
        assert "fuse" in stack and "write" in stack, stack
        main = thread(py_spy(pid), "MainThread")  # --nonblocking: a D thread defeats ptrace stop
        assert in_function(main, "save", "saver.py"), frames(main)
        assert run.checkpoint_dir is not None and _procs.mounted(run.checkpoint_dir)
        assert "fuse" in run.aux_pids


@live
@pytest.mark.ci
@pytest.mark.timeout(240)
def test_saver_lock_deadlock(tmp_path: Path) -> None:
    with established("saver-lock-deadlock", tmp_path, saver_thread_name="ckpt-writer") as run:
        pid = run.pids["worker:0"]
        dump = py_spy(pid, nonblocking=False)  # a plain deadlock: a blocking dump works
        main, saver = thread(dump, "MainThread"), thread(dump, "ckpt-writer")
        # THEN each thread's innermost frame is its own code, waiting at a `with lock:`
        (main_fn, main_file, _), (saver_fn, saver_file, _) = frames(main)[0], frames(saver)[0]
        assert same_function(main_fn, "main") and main_file.endswith("lock_deadlock.py")
        assert same_function(saver_fn, "save_loop") and saver_file.endswith("lock_deadlock.py")
        assert not main["active"] and not saver["active"]
        steps = step_lines(run, "worker:0")
        time.sleep(2)
        assert step_lines(run, "worker:0") == steps


@live
@pytest.mark.timeout(240)
@pytest.mark.parametrize("fault", ["never-started", "kill"])
def test_ps_unreachable_at_startup(tmp_path: Path, fault: str) -> None:
    with established("ps-unreachable-at-startup", tmp_path, fault=fault) as run:
        assert run.all_roles["ps:0"] is None
        host, port = run.addresses["ps:0"].split(":")
        with pytest.raises(ConnectionRefusedError), socket.create_connection((host, int(port)), 2):
            pass
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "_extend_graph", "session.py"), frames(main)
        assert "CreateSession still waiting for response from worker: /job:ps/replica:0/task:0" \
            in run.log_text("worker:0")


@live
@needs_fuse
@pytest.mark.timeout(240)
def test_healthy_slow_save(tmp_path: Path) -> None:
    with established("healthy-slow-save", tmp_path) as run:
        assert run.fuse is not None
        path = Path(run.facts["temp_file"])
        first = path.stat().st_size
        # still growing: progressing, not hung (a condition with a bound, not a fixed delay)
        assert _procs.wait_until(lambda: path.stat().st_size > first, 30, 0.2), first
        main = thread(py_spy(run.pids["worker:0"]), "MainThread")
        assert in_function(main, "save", "saver.py"), frames(main)
        assert run.truth["culprit_role"] is None


@live
@needs_fuse
@pytest.mark.timeout(180)
def test_reaper_cleans_up_after_a_harness_killed_hard(tmp_path: Path) -> None:
    # GIVEN a harness process holding a storage stall (a frozen FUSE mount, a D thread)
    workdir = tmp_path / "killed-harness"
    script = (
        "import os, sys\n"
        "from postmortem.scenarios import get_scenario\n"
        f"with get_scenario('storage-stall').start({str(workdir)!r}) as run:\n"
        "    run.wait_established(timeout=120)\n"
        "    print('ESTABLISHED', flush=True)\n"
        "    os.kill(os.getpid(), 9)\n"
    )
    # WHEN it is SIGKILLed (no __exit__ runs)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=150, cwd=Path(__file__).resolve().parents[2], check=False)
    assert "ESTABLISHED" in out.stdout, out.stderr[-2000:]
    # THEN the reaper ends the FUSE daemon, unmounts, and kills every process group
    def clean() -> bool:
        return not _procs.mounted(workdir / "ckpt") and not [
            p for p in os.listdir("/proc") if p.isdigit() and _is_ours(int(p), workdir)]
    assert _procs.wait_until(clean, 15, 0.2), "leftovers after the harness died"
