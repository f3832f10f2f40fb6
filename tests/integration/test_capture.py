"""`postmortem capture` against real processes (tests/integration/capture_targets.py).

Every target runs in its own process group and is killed (SIGKILL to the group, bounded
wait) when its test ends, pass or fail. The CLI runs as a real subprocess unless a test
needs to be inside it (dropping privileges).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from collectors import procfs, tools
from collectors.discover import discover

REPO = Path(__file__).resolve().parents[2]
TARGETS = Path(__file__).with_name("capture_targets.py")
CLI_ENV = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200"}


# -- process helpers -----------------------------------------------------------------------

class Procs:
    """Targets started by one test; `killall` ends each one's process group."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: dict[int, Path] = {}

    def start(self, *args: str, ready: str = "ready", timeout: float = 30.0,
              argv: list[str] | None = None) -> subprocess.Popen[bytes]:
        index = len(self.procs)
        out = self.workdir / f"target-{index}.out"
        err = self.workdir / f"target-{index}.err"
        with open(out, "wb") as stdout, open(err, "wb") as stderr:
            proc = subprocess.Popen(argv or [sys.executable, str(TARGETS), *args],
                                    stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
                                    start_new_session=True, cwd=self.workdir)
        self.procs.append(proc)
        self.logs[proc.pid] = out
        if ready:
            self.wait_for(proc, ready, timeout)
        return proc

    def wait_for(self, proc: subprocess.Popen[bytes], line: str, timeout: float) -> None:
        out = self.logs[proc.pid]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in out.read_text(errors="replace").splitlines():
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        err = out.with_suffix(".err").read_text(errors="replace")[-3000:]
        raise AssertionError(f"target {proc.args} never printed {line!r}:\n{err}")

    def killall(self) -> None:
        for proc in self.procs:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


@contextmanager
def targets(workdir: Path) -> Iterator[Procs]:
    procs = Procs(workdir)
    try:
        yield procs
    finally:
        procs.killall()


def run_cli(*args: str, timeout: float = 120,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "postmortem", "capture", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**CLI_ENV, **(env or {})})


def manifest(dump: Path) -> dict[str, Any]:
    return json.loads((dump / "manifest.json").read_text())  # type: ignore[no-any-return]


def round_file(dump: Path, pid: int, round_index: int, name: str) -> Any:
    return json.loads((dump / f"processes/{pid}/round-{round_index:03d}/{name}").read_text())


def rows(columns: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """procfs.json keeps threads, files and sockets as columns (schema 5): as rows."""
    assert len({len(v) for v in columns.values()}) <= 1, "columns of different lengths"
    return [dict(zip(columns, values, strict=True))
            for values in zip(*columns.values(), strict=True)]


def thread_named(traces: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [t for t in traces if t["thread_name"] == name]
    assert found, f"no thread {name!r} in {[t['thread_name'] for t in traces]}"
    return found[0]


def frame_names(thread: dict[str, Any]) -> list[str]:
    return [frame["name"] for frame in thread["frames"]]


def marker_line(text: str) -> int:
    for number, line in enumerate(TARGETS.read_text().splitlines(), start=1):
        if f"# AT: {text}" in line:
            return number
    raise AssertionError(text)


def wait_state(pid: int, wanted: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while procfs.read_state(pid) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert procfs.read_state(pid) == wanted


def wait_for_rounds(dump: Path, count: int, timeout: float) -> None:
    """Until the capture writing `dump` has recorded `count` rounds in its manifest."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(OSError, ValueError, KeyError):
            if len(manifest(dump)["rounds"]) >= count:
                return
        time.sleep(0.05)
    raise AssertionError(f"{dump} did not record {count} round(s) within {timeout:.0f}s")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_in_save(pid: int, timeout: float) -> None:
    """Until py-spy shows the main thread inside Saver.save -> session.run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run([tools.find_tool("py-spy") or "py-spy", "dump", "--json",
                              "--nonblocking", "--pid", str(pid)],
                             capture_output=True, text=True, timeout=30, check=False)
        with suppress(ValueError, AssertionError):
            names = frame_names(thread_named(json.loads(out.stdout), "MainThread"))
            if names and names[0] == "BaseSession._call_tf_sessionrun" and "Saver.save" in names:
                return
        time.sleep(0.2)
    raise AssertionError(f"process {pid} never reached Saver.save -> session.run")


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert "postmortem: error:" in result.stderr


# -- what a capture sees -------------------------------------------------------------------

@pytest.mark.live
@pytest.mark.timeout(60)
def test_sleeping_process_shows_its_function_and_state_s(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        dump = tmp_path / "dump"

        result = run_cli("--pid", str(proc.pid), "--samples", "2", "--interval", "0.2",
                         "-o", str(dump))

        assert result.returncode == 0, result.stderr
        data = manifest(dump)
        assert data["format"] == "postmortem-dump" and data["complete"] is True
        assert len(data["rounds"]) == 2
        assert {(o["collector"], o["status"]) for o in data["outcomes"]
                if o["round"] is not None} == {("procfs", "ok"), ("pyspy", "ok")}
        main = thread_named(round_file(dump, proc.pid, 0, "pyspy.json"), "MainThread")
        assert "sleeping_target" in frame_names(main)
        stat = round_file(dump, proc.pid, 1, "procfs.json")
        assert stat["state"] == "S"
        assert rows(stat["threads"])[0]["state"] == "S"
        info = json.loads((dump / f"processes/{proc.pid}/process.json").read_text())
        assert info["python"] is True and info["cmdline"][-1] == "sleep"
        # The target's stdout is a regular file: its tail is kept.
        stdout_tail = dump / f"processes/{proc.pid}/logs/stdout.txt"
        assert stdout_tail.read_text().strip() == "ready"
        assert data["command"][:4] == ["postmortem", "capture", "--pid", str(proc.pid)]


@pytest.mark.live
@pytest.mark.timeout(60)
def test_a_compressed_capture_holds_the_same_files_gzipped(tmp_path: Path) -> None:
    import gzip

    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        dump = tmp_path / "dump"
        result = run_cli("--pid", str(proc.pid), "--samples", "1", "--compress", "-o", str(dump))
        assert result.returncode == 0, result.stderr
        data = manifest(dump)
        assert data["options"]["compress"] is True and "--compress" in data["command"]
        spy = dump / f"processes/{proc.pid}/round-000/pyspy.json.gz"
        main = thread_named(json.loads(gzip.decompress(spy.read_bytes())), "MainThread")
        assert "sleeping_target" in frame_names(main)
        files = [f for o in data["outcomes"] for f in o["files"]]
        assert files and all(f.endswith(".gz") for f in files)  # the names it wrote
        assert all((dump / f).is_file() for f in files)
        # the manifest stays plain, and the dump analyzes with nothing reported missing
        out = subprocess.run([sys.executable, "-m", "postmortem", "analyze", str(dump),
                              "--json"], capture_output=True, text=True, timeout=60,
                             check=False)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["load_problems"] == []


@pytest.mark.live
@pytest.mark.timeout(60)
def test_discover_says_when_it_finds_two_jobs_of_one_host(tmp_path: Path) -> None:
    # GIVEN two jobs on this host: processes whose cluster specs share no address
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    specs = ('{"cluster": {"worker": ["127.0.0.1:11", "127.0.0.1:12"]}}',
             '{"cluster": {"worker": ["127.0.0.1:21"]}}')
    procs = [subprocess.Popen(sleep, env={**os.environ, "TF_CONFIG": c}) for c in specs]
    try:
        dump = tmp_path / "dump"
        out = run_cli("--discover", "--samples", "1", "-o", str(dump))
        # THEN both are captured (a dump of too much beats none), and the warning says how
        # to capture one job
        assert out.returncode == 0, out.stderr
        said = " ".join(out.stderr.split())
        assert "warning: --discover found 2 TensorFlow jobs" in said
        assert all(f"--pid {p.pid}" in said for p in procs)
        assert {p.pid for p in procs} <= {t["pid"] for t in manifest(dump)["targets"]}
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


@pytest.mark.live
@pytest.mark.timeout(60)
def test_spinning_process_burns_cpu_between_rounds_and_is_active(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("spin")
        dump = tmp_path / "dump"

        result = run_cli("--pid", str(proc.pid), "--samples", "3", "--interval", "0.5",
                         "-o", str(dump))

        assert result.returncode == 0, result.stderr
        cpu = [sum(round_file(dump, proc.pid, i, "procfs.json")[k] for k in ("utime", "stime"))
               for i in range(3)]
        assert cpu[0] < cpu[1] < cpu[2], cpu
        traces = [thread_named(round_file(dump, proc.pid, i, "pyspy.json"), "MainThread")
                  for i in range(3)]
        assert any(t["active"] for t in traces)
        assert all("spinning_target" in frame_names(t) for t in traces)


@pytest.mark.live
@pytest.mark.timeout(60)
def test_stopped_process_is_read_without_resuming_it(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        os.kill(proc.pid, signal.SIGSTOP)
        wait_state(proc.pid, "T")
        dump = tmp_path / "dump"

        result = run_cli("--pid", str(proc.pid), "--samples", "2", "--interval", "0.3",
                         "-o", str(dump))

        assert result.returncode == 0, result.stderr
        for round_index in range(2):
            main = thread_named(round_file(dump, proc.pid, round_index, "pyspy.json"),
                                "MainThread")
            assert "sleeping_target" in frame_names(main)
            assert round_file(dump, proc.pid, round_index, "procfs.json")["state"] == "T"
        reads = manifest(dump)["pauses"][str(proc.pid)]
        assert [r["seconds"] for r in reads] == [0.0, 0.0]  # --nonblocking
        assert all("stopped" in r["nonblocking_reason"] for r in reads), reads
        # Harmless: still stopped, now and a moment later.
        for _ in range(5):
            assert procfs.read_state(proc.pid) == "T"
            time.sleep(0.1)


@pytest.mark.live
@pytest.mark.timeout(60)
def test_running_process_keeps_running_during_and_after_capture(tmp_path: Path) -> None:
    counter = tmp_path / "counter"

    def read_counter() -> int:
        return int(counter.read_text() or 0)

    with targets(tmp_path) as procs:
        proc = procs.start("count", str(counter))
        seen: list[int] = []
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                seen.append(read_counter())
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        dump = tmp_path / "dump"
        try:
            result = run_cli("--pid", str(proc.pid), "--samples", "4", "--interval", "0.3",
                             "-o", str(dump))
        finally:
            done.set()
            watcher.join(5)
        after_capture = read_counter()
        time.sleep(0.3)

        assert result.returncode == 0, result.stderr
        assert len(seen) >= 10
        # Progress all through the capture: never stuck for long between two looks.
        assert seen[-1] > seen[0] + 20
        assert read_counter() > after_capture
        # Each round either paused the target briefly for one dump, or read it without
        # pausing and says why (a thread of it was in D for a moment, say).
        reads = manifest(dump)["pauses"][str(proc.pid)]
        assert [r["round"] for r in reads] == [0, 1, 2, 3]
        # Between rounds the watch saw it wake: it sleeps 10 ms per count.
        watched = [t for r in range(4) for t in round_file(dump, proc.pid, r, "watch.json")
                   ["threads"] if t["tid"] == proc.pid]
        assert len(watched) == 4 and all(t["woke"] > 0 for t in watched), watched
        for read in reads:
            if read["nonblocking_reason"]:
                assert read["seconds"] == 0.0, read
                assert any(word in read["nonblocking_reason"] for word in
                           ("state D", "could not suspend", "timed out")), read
            else:
                assert 0 < read["seconds"] < 2.0, read


@pytest.mark.live
@pytest.mark.timeout(60)
def test_deadlocked_threads_are_found_at_their_with_statements(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("deadlock")
        dump = tmp_path / "dump"

        result = run_cli("--pid", str(proc.pid), "--samples", "1", "-o", str(dump))

        assert result.returncode == 0, result.stderr
        traces = round_file(dump, proc.pid, 0, "pyspy.json")
        # The capture's shared source lines (one file for every process, schema 5): no
        # process of its own file, since every file it reads is the capture's.
        sources = json.loads((dump / "sources.json").read_text())
        assert not (dump / f"processes/{proc.pid}/sources.json").exists()
        # Deadlocked threads never wake: the watch after the round saw no switch at all.
        watch = round_file(dump, proc.pid, 0, "watch.json")
        for name in ("trainer", "checkpoint-saver"):
            tid = thread_named(traces, name)["os_thread_id"]
            [seen] = [t for t in watch["threads"] if t["tid"] == tid]
            assert seen["looks"] >= 5 and seen["woke"] == 0 and seen["voluntary"] == 0, seen
        for name, marker, statement in (
            ("trainer", "trainer waits", "with checkpoint_lock:"),
            ("checkpoint-saver", "saver waits", "with train_stats_lock:"),
        ):
            innermost = thread_named(traces, name)["frames"][0]
            assert innermost["line"] == marker_line(marker), innermost
            assert innermost["filename"] == str(TARGETS)
            held = sources[str(TARGETS)]
            assert statement in held[str(innermost["line"])]
            # The enclosing `with` (the lock it holds) is among the lines kept above.
            assert any("with " in text for number, text in held.items()
                       if int(number) < innermost["line"] - 1)


# -- failures: exit codes, messages, what is left on disk ---------------------------------

@pytest.mark.timeout(30)
def test_unknown_pid_exits_3_without_creating_the_dump(tmp_path: Path) -> None:
    pid_max = int(Path("/proc/sys/kernel/pid_max").read_text())
    dump = tmp_path / "dump"

    result = run_cli("--pid", str(pid_max + 1), "-o", str(dump))

    assert_clean_error(result, 3)
    assert f"No process with pid {pid_max + 1}" in result.stderr
    assert not dump.exists()


@pytest.mark.timeout(30)
def test_no_pid_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("-o", str(tmp_path / "dump"))

    assert_clean_error(result, 2)
    assert "--pid" in result.stderr
    assert not (tmp_path / "dump").exists()


@pytest.mark.live
@pytest.mark.timeout(30)
def test_not_a_python_process_exits_5(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start(ready="", argv=["sleep", "600"])
        wait_state(proc.pid, "S")

        result = run_cli("--pid", str(proc.pid), "-o", str(tmp_path / "dump"))

        assert_clean_error(result, 5)
        assert f"{proc.pid} (sleep)" in result.stderr
        assert not (tmp_path / "dump").exists()


@pytest.mark.live
@pytest.mark.timeout(30)
def test_missing_py_spy_exits_6_and_says_how_to_install(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        result = run_cli("--pid", str(proc.pid), "-o", str(tmp_path / "dump"),
                         env={"POSTMORTEM_PY_SPY": str(tmp_path / "no-such-py-spy")})

        assert_clean_error(result, 6)
        assert "py-spy is not installed" in result.stderr
        assert "pip install py-spy" in result.stderr
        assert not (tmp_path / "dump").exists()


@pytest.mark.live
@pytest.mark.timeout(60)
def test_existing_output_needs_force(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        dump = tmp_path / "dump"
        args = ("--pid", str(proc.pid), "--samples", "1", "-o", str(dump))
        assert run_cli(*args).returncode == 0
        first = manifest(dump)["started_at"]

        refused = run_cli(*args)
        assert_clean_error(refused, 7)
        assert "--force" in refused.stderr
        assert manifest(dump)["started_at"] == first  # untouched

        forced = run_cli(*args, "--force")
        assert forced.returncode == 0, forced.stderr
        assert manifest(dump)["started_at"] > first

        # --force never clears a directory that is not a dump.
        other = tmp_path / "not-a-dump"
        other.mkdir()
        (other / "precious.txt").write_text("keep me")
        refused = run_cli("--pid", str(proc.pid), "-o", str(other), "--force")
        assert_clean_error(refused, 2)
        assert (other / "precious.txt").read_text() == "keep me"


@pytest.mark.live
@pytest.mark.timeout(60)
def test_unreachable_tf_server_exits_9_and_keeps_the_dump(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        address = f"127.0.0.1:{free_port()}"  # nothing listens there now
        dump = tmp_path / "dump"

        result = run_cli("--pid", str(proc.pid), "--samples", "1", "--tf-server", address,
                         "-o", str(dump))

        assert_clean_error(result, 9)
        data = manifest(dump)
        assert data["complete"] is True
        assert data["tf_servers"] == [{"index": 0, "address": address}]
        [trace] = [o for o in data["outcomes"] if o["collector"] == "tf_profiler"]
        assert trace["status"] == "failed" and trace["target"] == address
        assert "cannot connect" in trace["reason"]
        assert (dump / f"processes/{proc.pid}/round-000/pyspy.json").exists()


@pytest.mark.live
@pytest.mark.timeout(60)
def test_target_exiting_mid_capture_exits_8_and_says_which_rounds(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        exit_file = tmp_path / "exit-now"
        proc = procs.start("exit", str(exit_file))
        dump = tmp_path / "dump"
        capture = subprocess.Popen(
            [sys.executable, "-m", "postmortem", "capture", "--pid", str(proc.pid),
             "--samples", "8", "--interval", "0.5", "-o", str(dump)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=CLI_ENV,
            start_new_session=True)
        try:
            # The target exits once round 0 is in the manifest: after it, whatever the load.
            wait_for_rounds(dump, 1, timeout=60)
            exit_file.touch()
            stdout, stderr = capture.communicate(timeout=60)
        finally:
            if capture.poll() is None:
                os.killpg(capture.pid, signal.SIGKILL)
                capture.wait(timeout=10)
        result = subprocess.CompletedProcess(capture.args, capture.returncode, stdout, stderr)

        assert_clean_error(result, 8)
        data = manifest(dump)
        assert len(data["rounds"]) == 8
        by_round: dict[int, set[str]] = {}
        for outcome in data["outcomes"]:
            if (outcome["round"] is not None and outcome["target"] == str(proc.pid)
                    and outcome["collector"] != "pyspy-watch"):  # the round's own collectors
                by_round.setdefault(outcome["round"], set()).add(outcome["status"])
        assert by_round[0] == {"ok"}
        failed = [r for r, statuses in sorted(by_round.items()) if "failed" in statuses]
        assert len(failed) == 1 and 1 <= failed[0] <= 7, by_round
        assert all(by_round[r] == {"skipped"} for r in range(failed[0] + 1, 8))
        assert "exited" in result.stderr
        assert (dump / f"processes/{proc.pid}/round-000/pyspy.json").exists()


PERMISSION_CHILD = textwrap.dedent("""
    import contextlib, io, os, shutil, sys
    from postmortem.cli import main
    from collectors.tools import find_tool

    target, out, bindir = sys.argv[1], sys.argv[2], sys.argv[3]
    # Warm up every lazy import (rich, typer) while /root is still readable.
    with contextlib.redirect_stderr(io.StringIO()):
        main(["capture", "--pid", "999999999", "-o", out])
    shutil.copy(find_tool("py-spy"), os.path.join(bindir, "py-spy"))
    os.chmod(bindir, 0o755)
    os.chmod(os.path.join(bindir, "py-spy"), 0o755)
    os.environ["PATH"] = bindir + os.pathsep + os.environ["PATH"]
    os.chown(out, 65534, 65534)
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
    sys.exit(main(["capture", "--pid", target, "-o", out]))
""")


@pytest.mark.live
@pytest.mark.timeout(60)
def test_permission_denied_exits_4_and_explains_the_fix(tmp_path: Path) -> None:
    with targets(tmp_path) as procs, tempfile.TemporaryDirectory() as bindir:
        proc = procs.start("sleep")  # owned by root
        out = tmp_path / "dump-nobody"
        out.mkdir()

        result = subprocess.run(
            [sys.executable, "-c", PERMISSION_CHILD, str(proc.pid), str(out), bindir],
            capture_output=True, text=True, timeout=30, cwd=REPO, env=CLI_ENV)

        assert_clean_error(result, 4)
        assert "Permission denied" in result.stderr
        assert "cap_sys_ptrace" in result.stderr.lower()
        assert "ptrace_scope" in result.stderr
        assert list(out.iterdir()) == []


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps an ignored
    # SIGINT: give the capture the disposition an interactive terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.live
@pytest.mark.timeout(60)
def test_ctrl_c_leaves_an_incomplete_but_valid_dump(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        dump = tmp_path / "dump"
        capture = subprocess.Popen(
            [sys.executable, "-m", "postmortem", "capture", "--pid", str(proc.pid),
             "--samples", "50", "--interval", "0.2", "-o", str(dump)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=CLI_ENV,
            start_new_session=True, preexec_fn=_default_sigint)
        try:
            wait_for_rounds(dump, 1, timeout=60)  # a round written, however slow the start
            capture.send_signal(signal.SIGINT)
            _, stderr = capture.communicate(timeout=20)
        finally:
            if capture.poll() is None:
                os.killpg(capture.pid, signal.SIGKILL)
                capture.wait(timeout=10)

        assert capture.returncode == 130, stderr
        assert "Traceback" not in stderr
        assert "Interrupted" in stderr
        data = manifest(dump)
        assert data["complete"] is False and data["interrupted"] is True
        assert 1 <= len(data["rounds"]) < 50
        assert len(data["pauses"][str(proc.pid)]) >= len(data["rounds"])
        assert procfs.read_state(proc.pid) == "S"


# -- a real ps/worker cluster: the worker stuck in Saver.save, the ps frozen --------------

@pytest.mark.live
@pytest.mark.timeout(180)
def test_worker_stuck_in_save_with_frozen_ps(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    ps_addr, worker_addr = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    go = tmp_path / "go"
    flags = ["--ps_hosts", ps_addr, "--worker_hosts", worker_addr, "--task_index", "0",
             "--checkpoint_dir", str(ckpt), "--go_file", str(go)]
    with targets(tmp_path) as procs:
        ps = procs.start("tf", "--job_name", "ps", *flags, timeout=90)
        worker = procs.start("tf", "--job_name", "worker", *flags, ready="SAVE_BEGIN",
                             timeout=120)
        os.kill(ps.pid, signal.SIGSTOP)
        wait_state(ps.pid, "T")
        go.touch()
        procs.wait_for(worker, "SAVE_CALLING", 10)
        wait_in_save(worker.pid, timeout=30)  # into session.run, waiting on the ps

        assert {ps.pid, worker.pid} <= set(discover())

        dump = tmp_path / "dump"
        result = run_cli("--pid", str(ps.pid), "--pid", str(worker.pid), "--samples", "2",
                         "--interval", "0.5", "--all-threads", "--tf-server", worker_addr,
                         "-o", str(dump), timeout=150)

        assert result.returncode == 0, result.stderr
        data = manifest(dump)
        failed = [o for o in data["outcomes"] if o["status"] != "ok"]
        assert not failed, failed
        # The worker: MainThread inside Saver.save -> session.run.
        main = thread_named(round_file(dump, worker.pid, 1, "pyspy.json"), "MainThread")
        frames = [(f["name"], Path(f["filename"]).name) for f in main["frames"]]
        assert frames[0] == ("BaseSession._call_tf_sessionrun", "session.py"), frames
        save = frames.index(("Saver.save", "saver.py"))
        assert frames[save - 1] == ("BaseSession.run", "session.py"), frames
        # The ps: stopped in every round, still stopped now, its gRPC port listening.
        ps_port = int(ps_addr.rsplit(":", 1)[1])
        for round_index in range(2):
            stat = round_file(dump, ps.pid, round_index, "procfs.json")
            assert stat["state"] == "T"
            assert ps_port in procfs.listening_ports(rows(stat["sockets"]))
            # The host's listening addresses are written once a round, by one of the two
            # processes of this network namespace; both name the namespace.
            both = [round_file(dump, p, round_index, "procfs.json") for p in (ps.pid, worker.pid)]
            assert both[0]["netns"] == both[1]["netns"]
            [listing] = [b["host_listening"] for b in both if "host_listening" in b]
            assert ps_addr.rsplit(":", 1)[1] in " ".join(listing)
        assert [r["seconds"] for r in data["pauses"][str(ps.pid)]] == [0.0, 0.0]
        assert procfs.read_state(ps.pid) == "T"
        # --all-threads: every native thread of the TF processes (gRPC, Eigen pools).
        native = (dump / f"processes/{ps.pid}/round-000/native.pystack.txt").read_text()
        assert native.count("Traceback for thread") >= 10
        # The checkpoint dir comes from the worker's --checkpoint_dir flag.
        assert {"index": 0, "dir": str(ckpt)} in data["checkpoint_dirs"]
        # The worker answered the profiler.
        events = json.loads((dump / "tf/0/events.json").read_text())
        assert events["address"] == worker_addr and events["answered"] is True
        assert worker.poll() is None and "SAVE_DONE" not in procs.logs[worker.pid].read_text()




@pytest.mark.live
@pytest.mark.timeout(30)
def test_stop_all_ends_a_running_tool_at_once() -> None:
    results: list[tools.ToolRun] = []
    runner = threading.Thread(
        target=lambda: results.append(tools.run_bounded(["sleep", "30"], 60)))
    runner.start()
    try:
        time.sleep(0.3)
        started = time.monotonic()
        tools.stop_all()
        runner.join(5)
        assert time.monotonic() - started < 2
        [run] = results
        assert run.interrupted and not run.timed_out
        assert tools.run_bounded(["true"], 5).interrupted  # nothing new starts
    finally:
        tools.reset_stop()
    assert tools.run_bounded(["true"], 5).returncode == 0


# -- options and outputs that cannot work: refused before anything is written -----------

@pytest.mark.live
@pytest.mark.timeout(120)
def test_options_that_cannot_work_are_refused_with_what_to_do(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("threads", "2")
        thread = next(int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid)
        (tmp_path / "a-dir").mkdir()
        dump = tmp_path / "dump"
        pid = ["--pid", str(proc.pid)]
        cases = [
            (["--interval", "nan"], 2, "--interval"),
            (["--interval", "inf"], 2, "--interval"),
            (["--samples", "0"], 2, "--samples"),
            (["--samples", "100000"], 2, "--samples"),
            (["--tf-server", "127.0.0.1:2222", "--tf-trace-ms", "-5"], 2, "--tf-trace-ms"),
            (["--tf-server", "127.0.0.1:99999"], 2, "port from 1 to 65535"),
            (["--log", "/dev/zero"], 2, "not a regular file"),
            (["--log", str(tmp_path / "a-dir")], 2, "not a regular file"),
            (["--checkpoint-dir", str(tmp_path / "nope")], 2, "no such directory"),
        ]
        for extra, code, words in cases:
            result = run_cli(*pid, *extra, "-o", str(dump))
            assert_clean_error(result, code)
            assert words in result.stderr, (extra, result.stderr)
            assert not dump.exists(), extra
        result = run_cli("--pid", str(thread), "-o", str(dump))
        assert_clean_error(result, 2)
        assert f"{thread} (a thread of process {proc.pid})" in result.stderr
        # The same pid twice is captured once.
        result = run_cli(*pid, *pid, "--samples", "1", "-o", str(dump))
        assert result.returncode == 0, result.stderr
        assert [t["pid"] for t in manifest(dump)["targets"]] == [proc.pid]


@pytest.mark.live
@pytest.mark.timeout(120)
def test_a_dump_is_never_lost_to_force(tmp_path: Path) -> None:
    with targets(tmp_path) as procs:
        proc = procs.start("sleep")
        dump = tmp_path / "dump"
        assert run_cli("--pid", str(proc.pid), "--samples", "1", "-o", str(dump)).returncode == 0
        first = manifest(dump)["started_at"]
        # From inside the dump, --force would delete the working directory: refused.
        inside = subprocess.run(
            [sys.executable, "-m", "postmortem", "capture", "--pid", str(proc.pid), "-o", ".",
             "--force"], capture_output=True, text=True, timeout=60, cwd=dump, env=CLI_ENV)
        assert_clean_error(inside, 2)
        assert "contains the current directory" in inside.stderr
        # Through a link: refused, the dump untouched.
        link = tmp_path / "link"
        link.symlink_to(dump)
        linked = run_cli("--pid", str(proc.pid), "-o", str(link), "--force")
        assert_clean_error(linked, 2)
        assert "symbolic link" in linked.stderr
        assert manifest(dump)["started_at"] == first
        # A file in the way, or a read-only place: exit 13 with the reason, nothing lost.
        (tmp_path / "file").write_text("x")
        blocked = run_cli("--pid", str(proc.pid), "-o", str(tmp_path / "file" / "d"))
        assert_clean_error(blocked, 13)
        assert "is a file, not a directory" in blocked.stderr
        # Replaced with --force: swapped in whole, nothing left beside it.
        forced = run_cli("--pid", str(proc.pid), "--samples", "1", "-o", str(dump), "--force")
        assert forced.returncode == 0, forced.stderr
        assert manifest(dump)["started_at"] > first
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".dump")) == []


def test_a_failed_replacement_leaves_the_old_dump_whole(tmp_path: Path) -> None:
    from collectors.dump import OutputPlan

    # GIVEN a dump, and a --force capture that builds its replacement and then fails
    old = tmp_path / "dump"
    old.mkdir()
    (old / "manifest.json").write_text(json.dumps({"format": "postmortem-dump"}))
    (old / "evidence.txt").write_text("keep me")
    plan = OutputPlan.prepare(old, force=True)
    assert plan.replaces and plan.build != plan.final and plan.build.parent == tmp_path
    (plan.build / "manifest.json").write_text("new")
    plan.abort()
    # THEN the old dump is as it was and nothing of the attempt remains
    assert (old / "evidence.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"]
    # AND a replacement that succeeds swaps whole
    plan = OutputPlan.prepare(old, force=True)
    (plan.build / "manifest.json").write_text("new")
    plan.commit()
    assert (old / "manifest.json").read_text() == "new" and not (old / "evidence.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dump"]
