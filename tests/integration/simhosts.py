"""A simulated multi-host cluster, all real parts: each "host" is a network namespace on a
bridge with a private address, its own PID, mount and UTS namespaces (unshare) and its own
OpenSSH sshd with a test key; a fourth namespace holds the bridge and is where a capture
over ssh runs from. Root only (CAP_SYS_ADMIN). Everything is undone in `close()`: the
namespaces' first processes are SIGKILLed (which ends every process inside them), then the
network namespaces are deleted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

SSHD = "/usr/sbin/sshd"
VENV_BIN = str(Path(sys.executable).parent)


def available() -> str:
    """'' when the harness can run here, else why not."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "unshare", "nsenter", "ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    if not os.access(SSHD, os.X_OK):
        return "needs openssh-server (/usr/sbin/sshd)"
    return ""


def run(*argv: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=check)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


@dataclass
class SimHost:
    name: str
    netns: str
    ip: str
    home: Path
    py_spy: bool
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def init_pid(self) -> int | None:
        """The root-namespace pid of the host's PID 1 (its sshd)."""
        if self.sshd is None:
            return None
        found = children(self.sshd.pid)
        return found[0] if found else None

    def enter(self) -> list[str]:
        """argv prefix that runs a command on this host (all its namespaces)."""
        pid = self.init_pid
        assert pid is not None, f"{self.name} is not running"
        return ["nsenter", "-t", str(pid), "-p", "-m", "-u", "-n", "--"]

    def stop_sshd(self) -> None:
        """Stop only the host's sshd listener: the host's processes go on."""
        pid = self.init_pid
        if pid is not None:
            # PID 1 of the namespace is sshd: stopping it keeps every child alive.
            os.kill(pid, signal.SIGSTOP)


@dataclass
class SimCluster:
    base: Path
    suffix: str = field(default_factory=lambda: secrets.token_hex(2))
    net: str = ""
    hosts: list[SimHost] = field(default_factory=list)
    spawned: list[subprocess.Popen[bytes]] = field(default_factory=list)
    ctl: str = ""

    def __post_init__(self) -> None:
        self.net = f"10.{200 + secrets.randbelow(50)}.{secrets.randbelow(250)}"
        self.ctl = f"pmctl{self.suffix}"
        self.key = self.base / "id_ed25519"
        self.known = self.base / "known_hosts"

    # -- setup ------------------------------------------------------------------------------
    def start(self, count: int, without_py_spy: tuple[int, ...] = ()) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        (self.base / "authorized_keys").write_text(Path(f"{self.key}.pub").read_text())
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        run("ip", "netns", "add", self.ctl)
        run("ip", "-n", self.ctl, "link", "set", "lo", "up")
        run("ip", "-n", self.ctl, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.ctl, "addr", "add", f"{self.net}.10/24", "dev", "br0")
        run("ip", "-n", self.ctl, "link", "set", "br0", "up")
        for i in range(1, count + 1):
            self._host(i, i not in without_py_spy)
        for host in self.hosts:
            self._wait_ssh(host)

    def _host(self, i: int, py_spy: bool) -> None:
        name = f"h{i}"
        host = SimHost(name, f"pm{self.suffix}{name}", f"{self.net}.{10 + i}",
                       self.base / name, py_spy)
        host.home.mkdir(parents=True, exist_ok=True)
        self.hosts.append(host)
        outer, inner = f"pmv{self.suffix}{i}", f"pmp{self.suffix}{i}"
        run("ip", "netns", "add", host.netns)
        run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", host.netns)
        run("ip", "link", "set", outer, "netns", self.ctl)
        run("ip", "-n", host.netns, "link", "set", inner, "name", "eth0")
        run("ip", "-n", host.netns, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        run("ip", "-n", host.netns, "link", "set", "eth0", "up")
        run("ip", "-n", host.netns, "link", "set", "lo", "up")
        run("ip", "-n", self.ctl, "link", "set", outer, "master", "br0")
        run("ip", "-n", self.ctl, "link", "set", outer, "up")
        hostkey = host.home / "hostkey"
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(hostkey))
        # The remote shell's PATH: with the venv (python3 with py-spy beside it), or the
        # system's alone (a host without py-spy).
        path = f"{VENV_BIN}:/usr/bin:/bin" if py_spy else "/usr/bin:/bin"
        config = host.home / "sshd_config"
        config.write_text(
            f"Port 22\nListenAddress {host.ip}\nHostKey {hostkey}\n"
            f"AuthorizedKeysFile {self.base}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPidFile none\nSetEnv PATH={path}\nLogLevel ERROR\n"
        )
        log = open(host.home / "sshd.log", "wb")  # noqa: SIM115 - kept for the process
        host.sshd = subprocess.Popen(
            ["ip", "netns", "exec", host.netns, "unshare", "--pid", "--fork", "--mount-proc",
             "--uts", "sh", "-c", f"hostname {name} && exec {SSHD} -D -e -f {config}"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()

    def _wait_ssh(self, host: SimHost, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            probe = run(*self.in_ctl(), *self.ssh(), f"root@{host.ip}", "true", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.3)
        raise RuntimeError(f"sshd on {host.name} did not come up: {probe.stderr[-500:]}")

    # -- use --------------------------------------------------------------------------------
    def in_ctl(self) -> list[str]:
        return ["ip", "netns", "exec", self.ctl]

    def ssh_options(self) -> list[str]:
        return [f"IdentityFile={self.key}", f"UserKnownHostsFile={self.known}",
                "StrictHostKeyChecking=accept-new", "LogLevel=ERROR"]

    def ssh(self) -> list[str]:
        return ["ssh", "-o", "BatchMode=yes", *(a for o in self.ssh_options() for a in ("-o", o))]

    def spawn(self, host: SimHost, argv: list[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process on a host; its stdout and stderr go to `log`."""
        full = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(log, "wb") as out:
            proc = subprocess.Popen([*host.enter(), *argv], stdout=out, stderr=subprocess.STDOUT,
                                    env=full, start_new_session=True)
        self.spawned.append(proc)
        return proc

    @staticmethod
    def target_pid(proc: subprocess.Popen[bytes], timeout: float = 10) -> int:
        """The root-namespace pid of the program nsenter started (its child)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = children(proc.pid)
            if found:
                return found[0]
            time.sleep(0.05)
        raise RuntimeError(f"nsenter {proc.pid} started nothing")

    # -- teardown ---------------------------------------------------------------------------
    def close(self) -> None:
        for proc in self.spawned:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for host in self.hosts:
            pid = host.init_pid
            if pid is not None:  # the namespace's PID 1: every process in it dies with it
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if host.sshd is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(host.sshd.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    host.sshd.wait(timeout=10)
        for proc in self.spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for host in self.hosts:
            run("ip", "netns", "del", host.netns, check=False)
        run("ip", "netns", "del", self.ctl, check=False)


def ns_pid(root_pid: int) -> int:
    """A process's pid inside its own PID namespace (the last NSpid field)."""
    for line in Path(f"/proc/{root_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    return root_pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
