"""Capture across hosts, the parts that need no second host: host and pid arguments, the
remote command lines, the agent run as a remote Python would run it (standard library only,
from a zip on stdin), the unpacking of what a host sends back, and a dump of several hosts
loaded as one cluster (built from a recorded sample, split over two hosts)."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from typing import Any

import pytest

import postmortem
from collectors import multihost
from collectors.multihost import HostSpec, parse_host, parse_pid_at, remote_argv, run_host
from collectors.remote import BOOTSTRAP
from postmortem.errors import BadDumpError, UsageError
from postmortem.model import PID_BITS, os_pid
from postmortem.render.text import culprit_text
from tests.conftest import SAMPLES, verdict

# -- arguments --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "host", "user", "port"),
    [
        ("10.0.0.5", "10.0.0.5", "", None),
        ("ubuntu@ps0.example", "ps0.example", "ubuntu", None),
        ("root@10.0.0.5:2200", "10.0.0.5", "root", 2200),
        ("[fd00::5]:22", "fd00::5", "", 22),
        ("fd00::5", "fd00::5", "", None),
    ],
)
def test_a_host_is_user_at_host_colon_port(text: str, host: str, user: str, port: int) -> None:
    spec = parse_host(text)
    assert (spec.host, spec.user, spec.port) == (host, user, port)


@pytest.mark.parametrize(
    "text",
    ["", "user@", "a b", "-oProxyCommand=x", "h:0", "h:99999", "h:x", "h;id", "$(id)", "h`id`",
     "a'b", "us;er@h"],
)
def test_a_bad_host_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="--host"):
        parse_host(text)


def test_a_pid_may_name_its_host() -> None:
    assert parse_pid_at("123") == (123, None)
    assert parse_pid_at("123@h2") == (123, "h2")
    for bad in ("x", "12@", "@h"):
        with pytest.raises(UsageError, match="--pid"):
            parse_pid_at(bad)


def test_ssh_runs_the_bootstrap_in_batch_mode_with_the_users_options() -> None:
    argv = remote_argv(parse_host("root@10.0.0.5:2200"), None, ("IdentityFile=/k",), "python3")
    assert argv[:2] == ["ssh", "-T"] and "BatchMode=yes" in argv
    assert argv[argv.index("-p") + 1] == "2200"
    assert argv[argv.index("IdentityFile=/k") - 1] == "-o"
    assert argv[-2] == "root@10.0.0.5" and argv[-3] == "--"  # a host is never an option
    # ssh hands the remote shell one string: the bootstrap, quoted once
    assert argv[-1].startswith("python3 -c ") and "from collectors.remote import main" in argv[-1]


def test_via_appends_the_command_or_puts_it_where_the_template_says() -> None:
    spec = parse_host("pod-7")
    argv = remote_argv(spec, "kubectl exec -i -n ml {host} --", (), "python3")
    assert argv[:6] == ["kubectl", "exec", "-i", "-n", "ml", "pod-7"]
    assert argv[-3:] == ["python3", "-c", BOOTSTRAP]
    argv = remote_argv(spec, "gcloud compute ssh {host} --command {command}", (), "python3.11")
    assert argv[:4] == ["gcloud", "compute", "ssh", "pod-7"]
    assert argv[-1].startswith("python3.11 -c ") and len(argv) == 6


# -- the agent, as a remote Python runs it ---------------------------------------------------


@pytest.fixture
def sleeper() -> Any:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def test_the_agent_runs_from_the_zip_alone_and_answers_the_clock(
    sleeper: int, tmp_path: Path
) -> None:
    # GIVEN a Python with no site-packages and no PYTHONPATH (-I -S): only the zip it reads
    payload = multihost.agent_zip()
    header = {"zip": len(payload), "py_spy": 0,
              "options": {"pids": [sleeper], "samples": 2, "interval": 0.2}}
    argv = [sys.executable, "-I", "-S", "-c", BOOTSTRAP]
    result = run_host(HostSpec("here", "here"), argv, header, payload, tmp_path / "h",
                      60, threading.Event())
    # THEN the dump comes back, with a clock sample at the start and at every round
    assert result.status == "ok", result.reason
    assert result.info["pids"] == [sleeper]
    assert [c["at"] for c in result.info["clock"]] == ["start", "round 1/2", "round 2/2"]
    assert all(abs(c["offset"]) <= c["rtt"] + 0.01 for c in result.info["clock"])
    manifest = json.loads((tmp_path / "h" / "manifest.json").read_text())
    assert [t["pid"] for t in manifest["targets"]] == [sleeper] and manifest["complete"]


def test_an_agent_whose_local_side_goes_away_stops_and_leaves_nothing(tmp_path: Path) -> None:
    # GIVEN the agent started, and its stdin closed before it got an answer to its clock
    payload = multihost.agent_zip()
    header = {"zip": len(payload), "py_spy": 0, "options": {"pids": [1], "samples": 1}}
    before = {p.name for p in Path("/tmp").iterdir() if p.name.startswith("postmortem-agent-")}
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", BOOTSTRAP],
        input=json.dumps(header).encode() + b"\n" + payload,
        capture_output=True, timeout=60, check=False,
    )
    # THEN it asked once, stopped, and removed its temporary directory
    assert proc.stdout.startswith(b"C 0\n") and b"TAR" not in proc.stdout
    assert proc.returncode != 0 and b"Traceback" not in proc.stderr
    after = {p.name for p in Path("/tmp").iterdir() if p.name.startswith("postmortem-agent-")}
    assert after <= before


def test_every_host_on_the_same_port_gets_its_own_role() -> None:
    import pandas as pd

    from postmortem.analysis.roles import Hosts, build_cluster

    # GIVEN two hosts whose servers both listen on 2222, roles only from TF_CONFIG's cluster
    spec = '{"cluster": {"worker": ["10.0.0.2:2222", "10.0.0.1:2222"]}}'
    key2 = (1 << PID_BITS) | 7
    processes = pd.DataFrame(
        [{"pid": 7, "args": ["python", "t.py"], "env": {"TF_CONFIG": spec}, "host": "h1"},
         {"pid": key2, "args": ["python", "t.py"], "env": {"TF_CONFIG": spec}, "host": "h2"}]
    )
    sockets = pd.DataFrame(
        [{"pid": 7, "tcp_state": "LISTEN", "local": "0.0.0.0:2222"},
         {"pid": key2, "tcp_state": "LISTEN", "local": "0.0.0.0:2222"}]
    )
    hosts = Hosts({"h1": frozenset({"h1", "10.0.0.1"}), "h2": frozenset({"h2", "10.0.0.2"})}, {})
    labels, members = build_cluster(processes, sockets, "ctl", hosts)
    assert labels == {7: "worker:1", key2: "worker:0"}
    assert {m.role: (m.pid, m.host) for m in members} == {
        "worker:0": (key2, "h2"), "worker:1": (7, "h1")}


def test_a_host_whose_shell_fails_says_why(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('ssh: connect to host x port 22:"
            " Connection refused\\n'); sys.exit(255)"]
    result = run_host(HostSpec("x", "x"), argv, {"zip": 0}, b"", tmp_path / "x", 30,
                      threading.Event())
    assert result.status == "failed" and result.exit_code == 255
    assert result.reason == "ssh: connect to host x port 22: Connection refused"
    assert not (tmp_path / "x").exists()


def _tar(entries: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in entries:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["../escape.json", "/etc/passwd-copy", "a/../../b"])
def test_a_path_outside_the_dump_is_refused(name: str, tmp_path: Path) -> None:
    data = _tar([(tarfile.TarInfo(name), b"x")])
    with pytest.raises(ValueError, match="outside the dump"):
        multihost._extract(data, tmp_path / "into")
    assert not (tmp_path / "escape.json").exists()


def test_links_and_devices_are_dropped(tmp_path: Path) -> None:
    link = tarfile.TarInfo("processes/1/evil")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/shadow"
    device = tarfile.TarInfo("processes/1/dev")
    device.type = tarfile.CHRTYPE
    regular = tarfile.TarInfo("manifest.json")
    multihost._extract(_tar([(link, b""), (device, b""), (regular, b"{}")]), tmp_path)
    assert (tmp_path / "manifest.json").read_text() == "{}"
    assert not (tmp_path / "processes" / "1" / "evil").exists()
    assert not (tmp_path / "processes" / "1" / "dev").exists()


# -- a dump of several hosts ------------------------------------------------------------------

SAMPLE = SAMPLES / "ps-frozen-during-save"  # ps:0 = 2560, worker:0 = 2561
OFFSET = 100.0


def _split(tmp_path: Path, names: tuple[str, str] = ("h1", "h2")) -> Path:
    """The sample as two hosts: the ps on the first, the worker on the second, whose clock
    runs OFFSET seconds behind."""
    dump = tmp_path / "dump"
    entries = []
    for name, keep, offset in ((names[0], 2560, 0.0), (names[1], 2561, -OFFSET)):
        host = dump / "hosts" / name
        shutil.copytree(SAMPLE, host)
        (host / "truth.json").unlink()
        shutil.rmtree(host / "processes" / str(5121 - keep))
        manifest = json.loads((host / "manifest.json").read_text())
        manifest["targets"] = [t for t in manifest["targets"] if t["pid"] == keep]
        manifest["outcomes"] = [o for o in manifest["outcomes"]
                                if o["target"] in (str(keep),) or not o["target"].isdigit()]
        if offset:  # this host's clock is behind: every time it wrote is too
            for r in manifest["rounds"]:
                r["started_at"] += offset
                r["ended_at"] += offset
        (host / "manifest.json").write_text(json.dumps(manifest))
        entries.append({"name": name, "address": f"root@{name}", "status": "ok",
                        "dir": f"hosts/{name}", "addresses": [], "hostname": name,
                        "clock": [{"at": "start", "offset": -offset, "rtt": 0.001}]})
    top = {"format": "postmortem-dump", "schema_version": 4, "multi_host": True, "host": "ctl",
           "started_at": 0, "ended_at": 1, "complete": True, "hosts": entries,
           "targets": [], "rounds": [], "outcomes": []}
    (dump / "manifest.json").write_text(json.dumps(top))
    return dump


def test_two_hosts_load_as_one_cluster_with_the_verdict_of_one(tmp_path: Path) -> None:
    dump = _split(tmp_path)
    incident = postmortem.analyze(postmortem.load(dump))
    found = incident.verdict.finding
    assert (found.hang_class.value, found.culprit and found.culprit.role) == (
        "peer-unresponsive", "ps:0")
    # every member on its host; the second host's process keyed apart, shown by its own pid
    hosts = {m.role: m.host for m in incident.members}
    assert hosts == {"ps:0": "h1", "worker:0": "h2"}
    # the second host's outcomes are keyed as its processes are
    outcomes = postmortem.load(dump).outcomes
    assert str((1 << PID_BITS) | 2561) in set(outcomes["target"])
    assert "2561" not in set(outcomes["target"])
    worker = next(p for p in incident.processes if p.role == "worker:0")
    assert worker.pid == (1 << PID_BITS) | 2561 and os_pid(worker.pid) == 2561
    assert "(pid 2561)" in worker.label
    assert culprit_text(found.culprit).startswith("ps:0 (pid 2560, host h1)")
    # every evidence row cites a file of the dump, under its host's directory
    for evidence in found.evidence:
        assert (dump / evidence.source).is_file(), evidence


def test_the_report_groups_members_by_host(tmp_path: Path) -> None:
    from postmortem.report.figures import cluster_map_figure

    incident = postmortem.analyze(postmortem.load(_split(tmp_path)))
    spec = cluster_map_figure(incident.members, incident.wait_for, {}, "ps:0")
    assert spec.figure is not None
    assert spec.figure["layout"]["xaxis"]["ticktext"] == ["h1", "h2"]  # a column per host
    assert "by host" in spec.figure["layout"]["title"]["text"]


def test_a_hosts_clock_is_moved_onto_the_capturing_hosts(tmp_path: Path) -> None:
    split = postmortem.load(_split(tmp_path))
    original = postmortem.load(SAMPLE)
    rounds = original.process_rounds
    want = sorted(rounds[rounds["pid"] == 2561]["time"].tolist())
    got = split.process_rounds
    moved = sorted(got[got["pid"] == (1 << PID_BITS) | 2561]["time"].tolist())
    # the sample's times were not shifted on disk: loading adds the measured offset
    assert moved == pytest.approx([t + OFFSET for t in want])


def test_a_hosts_log_times_are_moved_onto_the_capturing_hosts_clock(tmp_path: Path) -> None:
    from postmortem.analysis.facts import Facts

    original = Facts(postmortem.load(SAMPLE)).placed_lines
    split = Facts(postmortem.load(_split(tmp_path))).placed_lines
    key = (1 << PID_BITS) | 2561
    stamped = [
        (k, p) for k, p in original.items()
        if k[0] == 2561 and p.time is not None and not p.estimated
    ]
    assert stamped, "the sample's worker log has timestamped lines"
    for (_, stream, line_no), placed in stamped:
        moved = split[(key, stream, line_no)]
        assert moved.time == pytest.approx(placed.time + OFFSET)


def test_a_dump_of_hosts_is_checked_like_any_dump(tmp_path: Path) -> None:
    dump = _split(tmp_path)
    top = json.loads((dump / "manifest.json").read_text())
    # a host name that would leave the dump, and a host whose directory is gone
    top["hosts"][0]["name"] = "../h1"
    shutil.rmtree(dump / "hosts" / "h2")
    (dump / "manifest.json").write_text(json.dumps(top))
    with pytest.raises(BadDumpError, match="none of their dumps could be read"):
        postmortem.load(dump)
    # ... one good host still loads, and the other is a load problem, not a crash
    top["hosts"][0]["name"] = "h1"
    (dump / "manifest.json").write_text(json.dumps(top))
    loaded = postmortem.load(dump)
    assert "hosts/h2" in set(loaded.problems["file"])
    assert verdict(dump)["hang_class"]  # analyzes
    # ... and a dump of hosts inside a host's directory is refused, not followed
    nested = dump / "hosts" / "h1" / "manifest.json"
    nested.write_text(json.dumps(top))
    with pytest.raises(BadDumpError):
        postmortem.load(dump)
