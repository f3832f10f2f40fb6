"""Capture across hosts, all real parts: three "hosts" (network, PID, mount and UTS
namespaces on a bridge, each with its own sshd), a real tf.compat.v1 cluster spread over
them (ps:0 on h1, the chief worker:0 on h2, worker:1 on h3, every server on port 2222 of its
own host), the ps SIGSTOPped as the chief's Saver.save begins. `postmortem capture --host`
runs from a fourth namespace; `--follow-cluster` from the chief's host. h3 has no py-spy on
its PATH. Root only; teardown kills every namespace's first process and deletes the
namespaces, always.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.simhosts import SimCluster, SimHost, available, ns_pid

REPO = Path(__file__).resolve().parents[2]
PROGRAM = REPO / "postmortem" / "scenarios" / "programs" / "supervisor_save.py"
PORT = 2222
HAVE_TF = importlib.util.find_spec("tensorflow") is not None
WHY_NOT = available() or ("" if HAVE_TF else "needs tensorflow")

pytestmark = [
    pytest.mark.live,
    pytest.mark.slow,
    pytest.mark.ci,
    pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT),
]


@dataclass
class Hung:
    sim: SimCluster
    ps_pid: int  # root-namespace pid of ps:0 (SIGSTOPped)
    logs: dict[str, Path]

    def host(self, name: str) -> SimHost:
        return next(h for h in self.sim.hosts if h.name == name)


def _wait_for(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        time.sleep(0.25)
    tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"
    raise AssertionError(f"timed out waiting for {text!r} in {path}:\n{tail}")


@pytest.fixture(scope="module")
def hung(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hung]:
    base = tmp_path_factory.mktemp("multihost")
    sim = SimCluster(base / "sim")
    try:
        sim.start(3, without_py_spy=(3,))
        h1, h2, h3 = sim.hosts
        flags = [
            f"--ps_hosts={h1.ip}:{PORT}",
            f"--worker_hosts={h2.ip}:{PORT},{h3.ip}:{PORT}",
            f"--checkpoint_dir={base / 'ckpt'}",
            "--save_after_steps=20",
            f"--save_gate={base / 'save_gate'}",
            "--step_sleep=0.05",
        ]
        logs = {}
        procs = {}
        for role, host in (("ps:0", h1), ("worker:0", h2), ("worker:1", h3)):
            job, index = role.split(":")
            logs[role] = base / f"{role.replace(':', '-')}.log"
            argv = [sys.executable, "-u", str(PROGRAM), f"--job_name={job}",
                    f"--task_index={index}", *flags]
            procs[role] = sim.spawn(host, argv, logs[role], {"TF_CPP_MIN_LOG_LEVEL": "0"})
        _wait_for(logs["worker:0"], "save began", 180)
        ps_pid = sim.target_pid(procs["ps:0"])
        os.kill(ps_pid, signal.SIGSTOP)
        (base / "save_gate").touch()
        time.sleep(3)
        assert "save done" not in logs["worker:0"].read_text()
        yield Hung(sim, ps_pid, logs)
    finally:
        sim.close()


def _postmortem(
    prefix: list[str], *args: str, timeout: float = 150
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*prefix, sys.executable, "-m", "postmortem", *args],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, check=False)


def _said(out: subprocess.CompletedProcess[str]) -> str:
    """stderr with rich's line wrapping undone."""
    return " ".join(out.stderr.split())


def _ssh_flags(sim: SimCluster) -> list[str]:
    return [arg for option in sim.ssh_options() for arg in ("--ssh-option", option)]


def _verdict(dump: Path) -> dict[str, Any]:
    out = _postmortem([], "analyze", str(dump), "--json", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return dict(json.loads(out.stdout))


def _no_agent_left() -> None:
    # every host shares this filesystem: an agent's temporary directory would be here
    assert not [p for p in Path("/tmp").iterdir() if p.name.startswith("postmortem-agent-")]


@pytest.mark.timeout(300)
def test_capture_over_ssh_names_the_frozen_ps_on_its_host(hung: Hung, tmp_path: Path) -> None:
    # WHEN every host is captured over ssh from the fourth namespace, discovering each one's
    # TF processes there
    sim = hung.sim
    dump = tmp_path / "dump"
    hosts = [arg for h in sim.hosts for arg in ("--host", f"root@{h.ip}")]
    out = _postmortem(sim.in_ctl(), "capture", *hosts, "--discover", *_ssh_flags(sim),
                      "--samples", "2", "--interval", "1", "-o", str(dump))
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    # THEN one dump holds the three hosts, each with its clock offsets and addresses
    manifest = json.loads((dump / "manifest.json").read_text())
    by_ip = {h["name"]: h for h in manifest["hosts"]}
    assert set(by_ip) == {h.ip for h in sim.hosts}
    assert all(h["status"] == "ok" and len(h["clock"]) >= 3 for h in by_ip.values())
    assert all(host.ip in by_ip[host.ip]["addresses"] for host in sim.hosts)
    # ... h3 has no py-spy: captured without stacks, and the dump and the output say so
    h3 = hung.host("h3")
    assert by_ip[h3.ip]["py_spy"] is False and by_ip[hung.host("h1").ip]["py_spy"] is True
    assert f"py-spy is missing on root@{h3.ip}" in _said(out)
    # ... and the verdict names ps:0, on h1, stopped
    doc = _verdict(dump)
    verdict = doc["verdict"]
    assert verdict["hang_class"] == "peer-unresponsive", verdict
    assert verdict["culprit"]["role"] == "ps:0"
    assert verdict["culprit"]["host"] == hung.host("h1").ip
    members = {m["role"]: m for m in doc["members"]}
    assert {r: members[r]["host"] for r in ("ps:0", "worker:0", "worker:1")} == {
        "ps:0": hung.host("h1").ip, "worker:0": hung.host("h2").ip,
        "worker:1": hung.host("h3").ip,
    }
    assert all(members[r]["pid"] is not None for r in ("ps:0", "worker:0", "worker:1"))
    # ... the chief's save waits on ps:0 across hosts
    assert "ps:0" in next(
        e["waits_on"] for e in doc["wait_for"]
        if "worker:0" in [w["role"] for w in e["waiters"]])
    # ... and nothing was left behind, and the ps is still stopped (capture did no harm)
    _no_agent_left()
    assert Path(f"/proc/{hung.ps_pid}/stat").read_text().split(") ")[1][0] == "T"


@pytest.mark.timeout(300)
def test_follow_cluster_from_the_chiefs_host_finds_every_other_host(
    hung: Hung, tmp_path: Path
) -> None:
    # WHEN on the chief's host, one command follows the cluster spec to the other hosts
    sim = hung.sim
    h1, h2, h3 = (hung.host(n) for n in ("h1", "h2", "h3"))
    dump = tmp_path / "dump"
    out = _postmortem(h2.enter(), "capture", "--follow-cluster", *_ssh_flags(sim),
                      "--samples", "2", "--interval", "1", "-o", str(dump))
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"the cluster spec names 2 other host(s): {h1.ip} (ps:0), {h3.ip} (worker:1)" in (
        " ".join(out.stderr.split())
    ), out.stderr
    manifest = json.loads((dump / "manifest.json").read_text())
    assert sorted(h["name"] for h in manifest["hosts"]) == sorted(["local", h1.ip, h3.ip])
    verdict = _verdict(dump)["verdict"]
    assert (verdict["hang_class"], verdict["culprit"]["role"]) == ("peer-unresponsive", "ps:0")
    # ... and from a machine outside the job, starting from the chief named as PID@HOST
    chief = next(p for p in sim.spawned if "--job_name=worker" in " ".join(map(str, p.args))
                 and "--task_index=0" in " ".join(map(str, p.args)))
    chief_pid = ns_pid(sim.target_pid(chief))
    named = tmp_path / "named"
    out = _postmortem(sim.in_ctl(), "capture", "--follow-cluster", "--pid",
                      f"{chief_pid}@root@{h2.ip}", *_ssh_flags(sim), "--samples", "1",
                      "-o", str(named))
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((named / "manifest.json").read_text())
    assert sorted(h["name"] for h in manifest["hosts"]) == sorted([h1.ip, h2.ip, h3.ip])
    verdict = _verdict(named)["verdict"]
    assert (verdict["hang_class"], verdict["culprit"]["role"]) == ("peer-unresponsive", "ps:0")
    _no_agent_left()


@pytest.mark.timeout(300)
def test_via_another_remote_shell_and_a_pushed_py_spy(hung: Hung, tmp_path: Path) -> None:
    # GIVEN no ssh at all: a remote shell that enters a host's namespaces (as `docker exec
    # {host}` or `kubectl exec` would), the host named by its first process's pid; and h3,
    # which has no py-spy, given this host's for the run
    h1, h3 = hung.host("h1"), hung.host("h3")
    assert h1.init_pid is not None and h3.init_pid is not None
    dump = tmp_path / "dump"
    out = _postmortem(
        [], "capture", "--via", "nsenter -t {host} -p -m -u -n -- sh -c {command}",
        "--host", str(h1.init_pid), "--host", str(h3.init_pid), "--discover",
        "--push-py-spy", "--remote-python", "python3", "--samples", "2", "--interval", "1",
        "-o", str(dump),
    )
    assert out.returncode == 0, out.stderr[-3000:]
    manifest = json.loads((dump / "manifest.json").read_text())
    hosts = {h["name"]: h for h in manifest["hosts"]}
    assert set(hosts) == {str(h1.init_pid), str(h3.init_pid)}
    # THEN h3 was read with the pushed py-spy: worker:1's stacks are in the dump
    assert hosts[str(h3.init_pid)]["py_spy"] is True
    doc = _verdict(dump)
    members = {m["role"]: m for m in doc["members"]}
    worker1 = next(p for p in doc["processes"] if p["role"] == "worker:1")
    assert any(t["pid"] == worker1["pid"] and t["stack"] for t in doc["threads"])
    assert members["ps:0"]["pid"] is not None
    assert (doc["verdict"]["hang_class"], doc["verdict"]["culprit"]["role"]) == (
        "peer-unresponsive", "ps:0")
    _no_agent_left()  # the agent and the pushed py-spy went with their temporary directory


@pytest.mark.timeout(300)
def test_a_host_that_cannot_be_reached_is_named_and_the_rest_is_captured(
    hung: Hung, tmp_path: Path
) -> None:
    # GIVEN h3's ssh port closed (nothing listens on 2200) and, in a second run, h3's host
    # key unknown to a strict client
    sim = hung.sim
    h1, h2, h3 = (hung.host(n) for n in ("h1", "h2", "h3"))
    dump = tmp_path / "dump"
    out = _postmortem(sim.in_ctl(), "capture", "--host", f"root@{h1.ip}", "--host",
                      f"root@{h2.ip}", "--host", f"root@{h3.ip}:2200", "--discover",
                      *_ssh_flags(sim), "--samples", "1", "-o", str(dump))
    # THEN its own exit code, the host and ssh's reason, and the other hosts in the dump
    assert out.returncode == 14, out.stderr[-3000:]
    assert "Traceback" not in out.stderr
    assert f"root@{h3.ip}:2200: not captured: ssh: connect to host {h3.ip} port 2200" in (
        " ".join(out.stderr.split())
    ), out.stderr
    assert "Connection refused" in _said(out)
    doc = _verdict(dump)
    members = {m["role"]: m for m in doc["members"]}
    assert members["worker:1"]["pid"] is None
    assert "Connection refused" in members["worker:1"]["not_captured"]
    assert (doc["verdict"]["hang_class"], doc["verdict"]["culprit"]["role"]) == (
        "peer-unresponsive", "ps:0")
    # ... a key the host does not accept: ssh's reason; and a process named PID@HOST (the
    # pid as its host sees it) is captured there
    ps_pid = ns_pid(hung.ps_pid)
    wrong_key = tmp_path / "wrong_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong_key)],
                   check=True, timeout=30)
    out = _postmortem(sim.in_ctl(), "capture", "--pid", f"{ps_pid}@root@{h1.ip}",
                      "--via", f"ssh -T -o BatchMode=yes -o IdentityFile={wrong_key} "
                      f"-o UserKnownHostsFile={sim.known} {{host}}",
                      "--host", f"root@{h3.ip}", "--discover", "--samples", "1",
                      "-o", str(tmp_path / "key"))
    assert out.returncode == 14, out.stderr[-3000:]
    assert "Permission denied (publickey)" in _said(out)
    out = _postmortem(sim.in_ctl(), "capture", "--pid", f"{ps_pid}@root@{h1.ip}",
                      *_ssh_flags(sim), "--samples", "1", "-o", str(tmp_path / "one"))
    assert out.returncode == 0, out.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "manifest.json").read_text())
    assert [h["pids"] for h in one["hosts"]] == [[ps_pid]]
    # ... an unknown host key is refused by a strict client, with ssh's reason
    strict = [o for o in sim.ssh_options() if not o.startswith(("StrictHost", "UserKnown"))]
    flags = [a for o in strict for a in ("--ssh-option", o)]
    out = _postmortem(sim.in_ctl(), "capture", "--host", f"root@{h1.ip}", "--host",
                      f"root@{h3.ip}", "--discover", *flags, "--ssh-option",
                      f"UserKnownHostsFile={tmp_path / 'empty_known_hosts'}",
                      "--ssh-option", "StrictHostKeyChecking=yes", "--samples", "1",
                      "-o", str(tmp_path / "strict"))
    assert out.returncode == 14, out.stderr[-3000:]
    assert "Host key verification failed" in _said(out)
    assert "No host could be captured" in _said(out)
    assert not (tmp_path / "strict").exists()  # nothing captured: no dump
    _no_agent_left()
