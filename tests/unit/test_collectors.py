"""Pure logic of the capture side: procfs parsing, checkpoint-dir discovery, failure
classification. No process is started; /proc is a fake tree where a test needs one."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from collectors import checkpoint, procfs, tools
from collectors.capture import (
    BoundedCallTimeout,
    CaptureOptions,
    CaptureResult,
    Problem,
    call_bounded,
)
from collectors.layout import FailureKind
from collectors.tools import classify_failure
from postmortem.commands.capture import command_line
from postmortem.errors import ExitCode

# -- /proc/PID/stat ------------------------------------------------------------------------

STAT_TAIL = ("S 1 4242 4242 0 -1 4194560 1234 0 0 0 250 75 0 0 20 0 7 0 123456 "
             "1000000 2000 18446744073709551615 1 1 0 0 0 0 0 16781312 17922 0 0 0 17 1 0 0")


@pytest.mark.parametrize("comm", ["python3", "my prog", "a) S 1 (b", "((", "x)"])
def test_parse_stat_keeps_comm_with_spaces_and_parens(comm: str) -> None:
    stat = procfs.parse_stat(f"4242 ({comm}) {STAT_TAIL}\n")

    assert stat["comm"] == comm
    assert stat["state"] == "S"
    assert (stat["ppid"], stat["pgid"]) == (1, 4242)
    assert (stat["utime"], stat["stime"]) == (250, 75)
    assert stat["num_threads"] == 7
    assert stat["starttime"] == 123456


# -- /proc/PID/net/tcp{,6} (lines recorded on this machine) --------------------------------

@pytest.mark.parametrize(("raw", "decoded"), [
    ("0100007F:1F90", "127.0.0.1:8080"),
    ("00000000:08AE", "0.0.0.0:2222"),
    ("00000000000000000000000001000000:B299", "::1:45721"),
    ("00000000000000000000000000000000:8EA7", ":::36519"),
    # IPv4-mapped: a gRPC server on [::] accepting a 127.0.0.1 client.
    ("0000000000000000FFFF00000100007F:8EA7", "127.0.0.1:36519"),
    ("B80D0120000000000000000001000000:0050", "2001:db8::1:80"),
])
def test_decode_addr(raw: str, decoded: str) -> None:
    assert procfs._decode_addr(raw) == decoded


TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
              "   uid  timeout inode\n")
TCP6_LINES = [
    # a listening ps with one connection waiting in the accept backlog
    "   2: 00000000000000000000000000000000:8EA7 00000000000000000000000000000000:0000 0A "
    "00000000:00000001 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0",
    # a CLOSE_WAIT connection holding 2048 unread bytes
    "  12: 0000000000000000FFFF00000100007F:8EA7 0000000000000000FFFF00000100007F:C76C 08 "
    "00000000:00000800 00:00000000 00000000     0        0 5002 1 0000000000000000 20 4 0 10 -1",
]


@pytest.fixture
def fake_proc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(procfs, "PROC", tmp_path)
    base = tmp_path / "4242"
    (base / "net").mkdir(parents=True)
    (base / "net" / "tcp").write_text(TCP_HEADER)
    (base / "net" / "tcp6").write_text(TCP_HEADER + "\n".join(TCP6_LINES) + "\n")
    return base


def test_net_table_reads_backlog_and_unread_bytes(fake_proc: Path) -> None:
    table = procfs.read_net_table(4242)

    assert table[5001] == {"proto": "tcp6", "local": ":::36519", "remote": ":::0",
                           "tcp_state": "LISTEN", "tx_queue": 0, "rx_queue": 1}
    assert table[5002]["tcp_state"] == "CLOSE_WAIT"
    assert table[5002]["rx_queue"] == 2048
    assert table[5002]["remote"] == "127.0.0.1:51052"
    assert procfs.listening_ports(list(table.values())) == [36519]


def test_env_keeps_tf_grpc_python_and_drops_secrets(fake_proc: Path) -> None:
    env = {
        "TF_CONFIG": '{"task": {"type": "ps", "index": 0}}',
        "TF_CPP_MIN_LOG_LEVEL": "0",
        "GRPC_VERBOSITY": "debug",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "PYTHONPATH": "/srv/job",
        "HOME": "/root",
        "AWS_SECRET_ACCESS_KEY": "aws-secret",
        "TF_API_TOKEN": "tf-token",
        "GRPC_SSL_PRIVATE_KEY": "pem",
        "PYTHON_DB_PASSWORD": "hunter2",
        "TF_GCS_CREDENTIALS": "creds",
    }
    (fake_proc / "environ").write_bytes(
        b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0")

    kept, error = procfs.read_env(4242)

    assert error == ""
    assert kept == {key: env[key] for key in ("TF_CONFIG", "TF_CPP_MIN_LOG_LEVEL",
                                              "GRPC_VERBOSITY", "CUDA_VISIBLE_DEVICES",
                                              "PYTHONPATH")}
    assert not any(secret in str(kept) for secret in ("aws-secret", "tf-token", "pem",
                                                      "hunter2", "creds"))


def test_fds_list_files_and_sockets(fake_proc: Path, tmp_path: Path) -> None:
    fd_dir = fake_proc / "fd"
    fd_dir.mkdir()
    (fake_proc / "fdinfo").mkdir()
    data = tmp_path / "model.ckpt-7.data-00000-of-00001.tempstate123"
    data.write_bytes(b"x" * 100)
    os.symlink(str(data), fd_dir / "5")
    (fake_proc / "fdinfo" / "5").write_text("pos:\t64\nflags:\t0100001\nmnt_id:\t1\n")
    os.symlink("socket:[5001]", fd_dir / "7")
    os.symlink("socket:[9999]", fd_dir / "8")  # a unix socket: not in the TCP tables
    os.symlink("pipe:[77]", fd_dir / "9")

    files, sockets = procfs.read_fds(4242)

    assert files == [{"fd": 5, "path": str(data), "size": 100, "mtime": data.stat().st_mtime,
                      "pos": 64, "flags": "0100001"}]
    assert [(s["fd"], s["tcp_state"]) for s in sockets] == [(7, "LISTEN")]


# -- checkpoint directories ----------------------------------------------------------------

def test_dirs_from_flags_reads_every_spelling() -> None:
    cmdline = ["python", "train.py", "--job_name=worker", "--checkpoint_dir=/ckpt/a",
               "--logdir", "/logs/b", "-train_dir=/train/c", "--model-dir", "rel/d",
               "--save_dir=", "--output_dir", "--verbose", "--data_dir=/data"]

    assert checkpoint.dirs_from_flags(cmdline) == [
        Path("/ckpt/a"), Path("/logs/b"), Path("/train/c"), Path("rel/d")]


def test_dirs_from_flags_with_no_flags() -> None:
    assert checkpoint.dirs_from_flags(["python", "-m", "trainer", "--steps", "10"]) == []


def test_dirs_from_open_files_finds_checkpoint_writes() -> None:
    files = [
        {"path": "/ckpt/model.ckpt-100.data-00000-of-00001.tempstate8812"},
        {"path": "/ckpt2/model.ckpt-100_temp/part-00000-of-00002.data-00000-of-00001"},
        {"path": "/ckpt3/model.ckpt-5_temp_1a2b3c/part-00001-of-00002.index"},
        {"path": "/ckpt4/checkpoint"},
        {"path": "/ckpt5/model.ckpt-9.meta"},
        {"path": "/usr/lib/python3.11/site-packages/numpy/core/_multiarray_umath.so"},
        {"path": "/logs/events.out.tfevents.1700000000.host"},
    ]

    assert checkpoint.dirs_from_open_files(files) == [
        Path("/ckpt"), Path("/ckpt2"), Path("/ckpt3"), Path("/ckpt4"), Path("/ckpt5")]


def test_read_checkpoint_dir_lists_files_and_state(tmp_path: Path) -> None:
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-7"\n')
    (tmp_path / "model.ckpt-7.index").write_bytes(b"i" * 10)
    (tmp_path / "model.ckpt-8_temp").mkdir()
    (tmp_path / "model.ckpt-8_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(
        b"d" * 30)

    listing = checkpoint.read_checkpoint_dir(tmp_path)

    assert listing["exists"] is True
    assert listing["state_file"].startswith("model_checkpoint_path")
    assert [(f["name"], f["size"]) for f in listing["files"]] == [
        ("checkpoint", 38), ("model.ckpt-7.index", 10),
        ("model.ckpt-8_temp/part-00000-of-00001.data-00000-of-00001", 30)]


# -- what py-spy prints when it fails (py-spy 0.4.3, recorded here) -----------------------

PYSPY_PERMISSION = ("Permission Denied: Try running again with elevated permissions by going "
                    "'sudo env \"PATH=$PATH\" !!'")
PYSPY_NOT_PYTHON = """Error: Failed to find python version from target process

Stack backtrace:
   0: anyhow::error::<impl anyhow::Error>::msg
   1: py_spy::python_process_info::get_python_version
"""
PYSPY_GONE = """Error: Failed to get process executable name. Check that the process is running.

Caused by:
    0: No such file or directory (os error 2)
    1: No such file or directory (os error 2)
"""
PYSPY_STOPPED = """Error: Failed to get stack traces

Caused by:
    0: Failed to suspend process
    1: unexpected waitpid result PtraceEvent(Pid(10655), SIGSTOP, 128) to 10655
"""


@pytest.mark.parametrize(("text", "kind"), [
    (PYSPY_PERMISSION, "permission"),
    (PYSPY_NOT_PYTHON, "not-python"),
    (PYSPY_GONE, "exited"),
    (PYSPY_STOPPED, "error"),
    ("pystack: Operation not permitted", "permission"),
    ("something else entirely", "error"),
])
def test_classify_failure_on_real_messages(text: str, kind: str) -> None:
    assert classify_failure(text) == kind


def test_stopped_target_message_is_recognised() -> None:
    assert tools.SUSPEND_FAILED_MARKER in PYSPY_STOPPED.lower()


def test_find_tool_prefers_the_one_beside_the_interpreter() -> None:
    beside = Path(sys.executable).parent / "py-spy"
    if not os.access(beside, os.X_OK):
        pytest.skip("py-spy is not installed beside this interpreter")
    assert tools.find_tool("py-spy") == str(beside)


def test_find_tool_missing() -> None:
    assert tools.find_tool("no-such-tool-postmortem") is None


# -- the capture loop's small pieces -------------------------------------------------------

def test_call_bounded_returns_raises_and_times_out() -> None:
    assert call_bounded(lambda: 42, 1.0) == 42
    with pytest.raises(ZeroDivisionError):
        call_bounded(lambda: 1 // 0, 1.0)
    started = time.monotonic()
    with pytest.raises(BoundedCallTimeout):
        call_bounded(lambda: time.sleep(5), 0.2)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(("kinds", "code"), [
    ([], ExitCode.OK),
    (["error"], ExitCode.PARTIAL_CAPTURE),
    (["no-answer", "error"], ExitCode.TF_SERVER_UNREACHABLE),
    (["no-answer", "exited"], ExitCode.TARGET_EXITED),
    (["exited", "permission"], ExitCode.PERMISSION),
    (["not-python", "exited"], ExitCode.NOT_PYTHON),
])
def test_exit_code_picks_the_most_specific_problem(kinds: list[str], code: ExitCode) -> None:
    result = CaptureResult(Path("d"), {}, [Problem(FailureKind(kind), "x") for kind in kinds])
    assert result.exit_code == code


def test_command_line_reproduces_the_capture() -> None:
    options = CaptureOptions(pids=(1, 2), output=Path("out"), samples=2, interval=0.5,
                             all_threads=True, tf_servers=("h:1",),
                             checkpoint_dirs=(Path("/c"),))

    assert command_line(options) == (
        "postmortem", "capture", "--pid", "1", "--pid", "2", "--samples", "2",
        "--interval", "0.5", "--all-threads", "--checkpoint-dir", "/c", "--tf-server", "h:1",
        "--tf-trace-ms", "500", "-o", "out")


def test_discover_never_finds_the_capture_itself_or_the_postmortem_that_started_it(
    tmp_path: Path,
) -> None:
    # GIVEN a capture run from a shell of the job (TF_CONFIG in its environment): a parent
    # with TF_CONFIG that starts a child python with TF_CONFIG which discovers; the parent
    # once postmortem itself (its CLI starting a local agent), once a job process (the
    # flight recorder's watchdog starting a capture)
    import subprocess
    import sys

    child = "from collectors.discover import discover; import os; print(discover(), os.getppid())"
    parent = (
        "import subprocess, sys; "
        f"sys.stdout.write(subprocess.run([sys.executable, '-c', {child!r}], "
        "capture_output=True, text=True, check=True).stdout)"
    )
    env = {**os.environ, "TF_CONFIG": '{"cluster": {"worker": ["h:1"]}}'}
    for extra, found_parent in ((["-m", "postmortem"], False), ([], True)):
        out = subprocess.run([sys.executable, "-c", parent, *extra], capture_output=True,
                             text=True, env=env, timeout=60, check=True,
                             cwd=Path(__file__).parents[2])
        found, parent_pid = out.stdout.rsplit(" ", 1)
        # THEN the discovering process is never a target; its parent only when a job's
        assert (int(parent_pid) in json.loads(found)) is found_parent, (extra, out.stdout)


def test_discover_groups_processes_by_the_job_their_cluster_specs_name() -> None:
    import subprocess
    import sys

    from collectors.discover import jobs

    # GIVEN two jobs on one host (disjoint cluster specs), a member of the first that sees
    # more of it (an evaluator's TF_CONFIG), and a python that names no cluster
    first = '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}}'
    wider = '{"cluster": {"worker": ["127.0.0.1:1"], "evaluator": ["127.0.0.1:3"]}}'
    second = '{"cluster": {"worker": ["127.0.0.1:7"]}}'
    sleep = [sys.executable, "-c", "import time; time.sleep(60)"]
    procs = [subprocess.Popen(sleep, env={**os.environ, "TF_CONFIG": c}) for c in
             (first, wider, second)]
    procs.append(subprocess.Popen(sleep))
    try:
        groups, loose = jobs([p.pid for p in procs])
        assert sorted(groups) == sorted([[procs[0].pid, procs[1].pid], [procs[2].pid]])
        assert loose == [procs[3].pid]
    finally:
        for p in procs:
            p.kill()
            p.wait(10)


def test_source_lines_are_kept_once_for_the_capture(tmp_path: Path) -> None:
    # GIVEN a capture's writer and two targets (this process twice) at the same frames
    from collectors.base import Target
    from collectors.dump import DumpWriter
    from collectors.stacks import PySpyCollector

    code = tmp_path / "job.py"
    code.write_text("".join(f"line {n}\n" for n in range(1, 401)))
    out = DumpWriter(tmp_path / "dump", ["postmortem"], {})
    (tmp_path / "dump").mkdir()
    traces: list[dict[str, object]] = [
        {"frames": [{"filename": str(code), "line": 350}, {"filename": str(code), "line": 5}]}]
    first, second = Target(os.getpid()), Target(os.getpid())
    assert out.claim("key", 1) and out.claim("key", 1) and not out.claim("key", 2)
    # WHEN both keep their sources
    written = PySpyCollector._write_sources(first, traces, out)
    again = PySpyCollector._write_sources(second, traces, out)
    # THEN the lines are in the capture's sources.json once, no process has a file of
    # its own, and a second target with nothing new writes nothing
    assert written == ["sources.json"] and again == []
    shared = json.loads((tmp_path / "dump/sources.json").read_text())
    assert shared[str(code)]["350"] == "line 350" and shared[str(code)]["1"] == "line 1"
    assert "199" not in shared[str(code)]  # 150 lines above each frame
    assert not list((tmp_path / "dump").glob("processes/*/sources.json"))
    # WHEN a third target's file at that path differs (another mount namespace): its
    # earlier lines of it matched, this round's do not
    third = Target(os.getpid())
    PySpyCollector._write_sources(third, [{"frames": [{"filename": str(code), "line": 5}]}], out)
    code.write_text("".join(f"other {n}\n" for n in range(1, 401)))
    files = PySpyCollector._write_sources(
        third, [{"frames": [{"filename": str(code), "line": 400}]}], out)
    # THEN that file moves to its own sources.json, whole: its lines 1-5 read before and
    # 250-400 now, never the shared lines it did not read (200-249 are the others')
    own = json.loads((tmp_path / "dump" / files[-1]).read_text())[str(code)]
    assert own["1"] == "line 1" and own["250"] == "other 250" and own["400"] == "other 400"
    assert "220" not in own and "220" in shared[str(code)]
    assert shared == json.loads((tmp_path / "dump/sources.json").read_text())
    # AND the loader gives it that file from its own lines alone, the others the shared
    from postmortem.loading import _with_own
    view = _with_own(shared, {str(code): own})
    assert view[str(code)] == own and _with_own(shared, {}) is shared


def test_the_hosts_listening_addresses_are_written_once_a_round(tmp_path: Path) -> None:
    from collectors.dump import DumpWriter

    out = DumpWriter(tmp_path, ["postmortem"], {})
    data = procfs.read_round(os.getpid())
    first = procfs.for_dump(data, 0, out)
    second = procfs.for_dump({**data, "pid": os.getppid()}, 0, out)  # the same namespace
    again = procfs.for_dump(data, 0, out)  # the first one's file, written again
    later = procfs.for_dump({**data, "pid": os.getppid()}, 1, out)
    assert "host_listening" in first and "host_listening" not in second
    assert "host_listening" in again and "host_listening" in later
    assert first["netns"] == second["netns"] != ""
    # threads as columns, one value per thread in every column
    lengths = {len(v) for v in first["threads"].values()}
    assert lengths == {len(data["threads"])}
    assert first["threads"]["tid"][0] == data["threads"][0]["tid"]


def test_the_watch_takes_off_the_switch_of_a_thread_resuming_from_the_attach() -> None:
    from collectors.watch import SETTLE_LOOKS, ThreadWatch

    def watched(*looks: tuple[tuple[int, int] | None, str | None]) -> dict[str, int]:
        record = ThreadWatch(1)
        for switches, state in looks:
            record.look(switches, state)
        return record.to_json()

    # Resuming from the capture's attach: running at the first look, asleep at the next.
    # That return to its wait is the capture's switch, not the job's.
    seen = watched(((10, 3), "R"), ((11, 3), "S"), ((11, 3), "S"), ((11, 3), "S"))
    assert seen["woke"] == 0 and seen["voluntary"] == 0
    # ... and it is the only one taken off: three more switches in that window still count
    seen = watched(((10, 3), "R"), ((14, 3), "S"), ((15, 3), "S"))
    assert seen["woke"] == 2 and seen["voluntary"] == 4
    # Asleep at its first look (or back asleep with its switch already counted in): every
    # switch counts.
    seen = watched(((10, 0), "S"), ((11, 0), "S"), ((11, 0), "S"), ((12, 0), "S"))
    assert seen["woke"] == 2 and seen["voluntary"] == 2
    seen = watched(((11, 0), "R"), ((11, 0), "S"), ((12, 0), "S"))
    assert seen["woke"] == 1 and seen["voluntary"] == 1
    # Running in every look: one switch off, the rest count.
    looks = [((100 + 2 * n, 0), "R") for n in range(SETTLE_LOOKS + 3)]
    seen = watched(*looks)
    assert seen["woke"] == SETTLE_LOOKS + 2 and seen["voluntary"] == 2 * (SETTLE_LOOKS + 2) - 1
    # A look whose counters cannot be read changes nothing.
    assert watched(*looks, (None, None)) == seen
