"""A scenario starts a real local TF cluster, injects one fault, and cleans up always.

``Scenario.start(workdir, **params)`` returns a ``ScenarioRun``; entering it launches the
processes (each in its own session) and a driver thread that injects the fault;
``wait_established`` returns once the hang is really there. Leaving the context ends the
FUSE daemon first (so writers blocked in it get an error), lazily unmounts, then
terminates every process group the run started.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from postmortem.errors import PostmortemError
from postmortem.scenarios import _procs
from postmortem.scenarios._procs import Spawned
from postmortem.scenarios.programs import _common as markers

T = TypeVar("T")

STEP_RE = re.compile(r"INFO(?::scenario:| )step (\d+) global_step (\d+)")


class ScenarioError(PostmortemError):
    """A scenario could not be started, or its hang did not establish."""


class _Stopped(Exception):
    """The run is being torn down: the driver thread unwinds."""


@dataclass(frozen=True)
class Truth:
    hang_class: str
    culprit_role: str | None
    blocking_op: str
    notes: str
    # Words the analyzer's blocking op must contain: the call and who it waits on.
    op_terms: tuple[str, ...] = ()
    # How the job distributes: "compat.v1" (ps/worker graphs and sessions),
    # "MultiWorkerMirroredStrategy" or "ParameterServerStrategy".
    strategy: str = "compat.v1"

    def as_dict(self) -> dict[str, Any]:
        return {
            "hang_class": self.hang_class,
            "culprit_role": self.culprit_role,
            "blocking_op": self.blocking_op,
            "op_terms": list(self.op_terms),
            "notes": self.notes,
            "strategy": self.strategy,
        }


def parse_role(role: str) -> tuple[str, int]:
    job, _, index = role.partition(":")
    if job not in ("ps", "worker", "chief", "evaluator") or not index.isdigit():
        raise ScenarioError(
            f"bad role {role!r}: want 'ps:N', 'worker:N', 'chief:0' or 'evaluator:0'"
        )
    return job, int(index)


class Scenario:
    """One reproducible hang. Subclasses set the class attributes and implement the hooks."""

    name: ClassVar[str]
    description: ClassVar[str]
    hang_class: ClassVar[str]
    defaults: ClassVar[Mapping[str, Any]] = {}

    def start(self, workdir: Path | str, **params: Any) -> ScenarioRun:
        unknown = sorted(set(params) - set(self.defaults))
        if unknown:
            raise ScenarioError(
                f"scenario {self.name!r} has no parameter(s) {', '.join(unknown)}",
                help_text=f"Known parameters: {', '.join(sorted(self.defaults))}.",
            )
        merged = {**self.defaults, **params}
        self.validate(merged)
        return ScenarioRun(self, Path(workdir), merged)

    # -- hooks ------------------------------------------------------------------------
    def validate(self, params: dict[str, Any]) -> None:
        """Raise ScenarioError for parameters that cannot work."""
        if params.get("num_ps", 1) < 1 or params.get("num_workers", 1) < 1:
            raise ScenarioError("a cluster needs at least one ps and one worker")
        culprit = params.get("culprit")
        if culprit:
            job, index = parse_role(culprit)
            size = params["num_ps"] if job == "ps" else params["num_workers"]
            if index >= size:
                raise ScenarioError(f"culprit {culprit} is not in a cluster of {size} {job}")

    def launch(self, run: ScenarioRun) -> None:
        """Start the processes (return quickly; the driver waits for readiness)."""
        raise NotImplementedError

    def drive(self, run: ScenarioRun) -> None:
        """Runs in the driver thread: inject the fault, return once the hang is established."""
        raise NotImplementedError

    def truth(self, run: ScenarioRun) -> Truth:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<Scenario {self.name} -> {self.hang_class}>"


@dataclass
class FuseMount:
    mountpoint: Path
    root: Path
    control_dir: Path
    daemon: Spawned | None = None

    @property
    def block_flag(self) -> Path:
        return self.control_dir / "block_writes"


@dataclass
class ScenarioRun:
    scenario: Scenario
    workdir: Path
    params: dict[str, Any]
    members: dict[str, Spawned] = field(default_factory=dict)
    aux: dict[str, Spawned] = field(default_factory=dict)
    addresses: dict[str, str] = field(default_factory=dict)
    checkpoint_dir: Path | None = None
    fuse: FuseMount | None = None
    established_after: float | None = None  # seconds from launch to established
    facts: dict[str, Any] = field(default_factory=dict)  # what the driver observed

    def __post_init__(self) -> None:
        self.workdir = self.workdir.resolve()
        self.log_dir = self.workdir / "logs"
        self.control_dir = self.workdir / "control"
        self._stop = threading.Event()
        self._established = threading.Event()
        self._error: BaseException | None = None
        self._driver: threading.Thread | None = None
        self._started_at = 0.0
        self._cleaned = False
        self._lock = threading.Lock()  # spawning vs. closing
        self._reaper: Spawned | None = None
        self._registry = self.control_dir / "started.txt"
        self.cleanup_problems: list[str] = []

    # -- context manager ----------------------------------------------------------------
    def __enter__(self) -> ScenarioRun:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.control_dir.mkdir(exist_ok=True)
        self._started_at = time.monotonic()
        self._start_reaper()
        try:
            self.scenario.launch(self)
        except BaseException:
            self.close()
            raise
        self._driver = threading.Thread(
            target=self._drive, name=f"scenario-driver-{self.scenario.name}", daemon=True
        )
        self._driver.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drive(self) -> None:
        try:
            self.scenario.drive(self)
            self.established_after = time.monotonic() - self._started_at
            self._established.set()
        except _Stopped:
            pass
        except BaseException as e:  # surfaced by wait_established
            self._error = e

    # -- public API -----------------------------------------------------------------------
    def wait_established(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not self._established.is_set():
            if self._error is not None:
                raise ScenarioError(
                    f"scenario {self.scenario.name}: {self._error}\n{self.diagnostics()}"
                ) from self._error
            if self._driver is None or self._stop.is_set():
                raise ScenarioError(f"scenario {self.scenario.name} is not running")
            if time.monotonic() >= deadline:
                raise ScenarioError(
                    f"scenario {self.scenario.name}: hang not established after {timeout:.0f}s\n"
                    f"{self.diagnostics()}"
                )
            self._established.wait(0.2)

    @property
    def pids(self) -> dict[str, int]:
        """Cluster members alive (running or stopped): the processes worth capturing."""
        return {role: p.pid for role, p in list(self.members.items()) if p.alive()}

    @property
    def aux_pids(self) -> dict[str, int]:
        """Helper processes that are not cluster members (the FUSE daemon)."""
        return {name: p.pid for name, p in self.aux.items() if p.alive()}

    @property
    def all_roles(self) -> dict[str, int | None]:
        out: dict[str, int | None] = {}
        # the cluster's tasks, and members with no cluster address (an evaluator)
        for role in [*self.addresses, *(r for r in self.members if r not in self.addresses)]:
            p = self.members.get(role)
            out[role] = p.pid if p is not None and p.alive() else None
        return out

    @property
    def log_paths(self) -> dict[str, Path]:
        return {role: p.stderr_path for role, p in list(self.members.items())}

    @property
    def tf_servers(self) -> dict[str, str]:
        return {
            role: self.addresses[role]
            for role, p in list(self.members.items())
            if p.alive() and markers.SERVER_READY in _procs.read_text(p.stderr_path)
        }

    @property
    def truth(self) -> dict[str, Any]:
        return self.scenario.truth(self).as_dict()

    # -- helpers for scenarios ---------------------------------------------------------------
    def plan_cluster(self, num_ps: int, num_workers: int) -> None:
        ports = _procs.free_ports(num_ps + num_workers)
        for i in range(num_ps):
            self.addresses[f"ps:{i}"] = f"127.0.0.1:{ports[i]}"
        for i in range(num_workers):
            self.addresses[f"worker:{i}"] = f"127.0.0.1:{ports[num_ps + i]}"

    def cluster_flags(self, role: str) -> list[str]:
        job, index = parse_role(role)
        ps = [a for r, a in self.addresses.items() if r.startswith("ps:")]
        workers = [a for r, a in self.addresses.items() if r.startswith("worker:")]
        return [
            f"--job_name={job}",
            f"--task_index={index}",
            f"--ps_hosts={','.join(ps)}",
            f"--worker_hosts={','.join(workers)}",
        ]

    def tf_config(self, role: str) -> str:
        """TF_CONFIG of a TF2 job's task: the cluster by job, and this task."""
        job, index = parse_role(role)
        cluster: dict[str, list[str]] = {}
        for other, address in self.addresses.items():
            cluster.setdefault(other.partition(":")[0], []).append(address)
        return json.dumps({"cluster": cluster, "task": {"type": job, "index": index}})

    def spawn_member(
        self, role: str, program: str, *extra: str, tf_config: bool = False
    ) -> Spawned:
        """Start a member: a tf.compat.v1 program with the classic cluster flags, or (with
        tf_config) a TF2 program configured by TF_CONFIG alone."""
        recorder = ["--recorder"] if self.params.get("recorder") else []
        flags = [] if tf_config else self.cluster_flags(role)
        argv = _procs.python_program(program, *flags, *recorder, *extra)
        # A flight recorder writes under the run's own directory: cleaned up with it.
        env = {"POSTMORTEM_FLIGHT_DIR": str(self.workdir / "flight")}
        if tf_config:
            env["TF_CONFIG"] = self.tf_config(role)
        if self.params.get("recorder_stall_s"):
            env["POSTMORTEM_FLIGHT_STALL_AFTER_S"] = str(self.params["recorder_stall_s"])
        if self.params.get("recorder_auto_capture"):
            env["POSTMORTEM_FLIGHT_AUTO_CAPTURE"] = "1"
        with self._lock:
            self.check_stop()
            proc = _procs.spawn(role, argv, self.log_dir, env)
            self.members[role] = proc
            self._register(f"proc {proc.pid}")
        return proc

    def roles(self, job: str) -> list[str]:
        return [r for r in self.addresses if r.startswith(f"{job}:")]

    def log_text(self, role: str) -> str:
        p = self.members.get(role)
        return _procs.read_text(p.stderr_path) if p else ""

    def check_stop(self) -> None:
        if self._stop.is_set():
            raise _Stopped

    def sleep(self, secs: float) -> None:
        if self._stop.wait(secs):
            raise _Stopped

    def wait_for(
        self, what: str, predicate: Callable[[], T], timeout: float, poll: float = 0.2
    ) -> T:
        """Poll predicate until truthy; raise ScenarioError naming `what` on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_stop()
            result = predicate()
            if result:
                return result
            self.check_members_alive()
            if time.monotonic() >= deadline:
                raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}")
            self.sleep(poll)

    def check_members_alive(self) -> None:
        for role, p in list(self.members.items()):
            if not p.killed and not p.may_exit and p.popen.poll() is not None:
                raise ScenarioError(
                    f"{role} (pid {p.pid}) exited with code {p.popen.returncode} "
                    f"before the hang established"
                )

    def wait_log(self, role: str, text: str, timeout: float) -> str:
        return self.wait_for(
            f"{text!r} in {role}'s log",
            lambda: text if text in self.log_text(role) else "",
            timeout,
        )

    def wait_servers_ready(self, roles: list[str], timeout: float = 90) -> None:
        for role in roles:
            self.wait_log(role, markers.SERVER_READY, timeout)

    def stop_member(self, role: str) -> None:
        """The fault "stop": SIGSTOP the process (a frozen peer)."""
        _procs.signal_group(self.members[role], signal.SIGSTOP)
        self.wait_for(
            f"{role} to show state T",
            lambda: _procs.proc_state(self.members[role].pid) in ("T", "t"),
            10,
            0.05,
        )

    def kill_member(self, role: str) -> None:
        """The fault "kill": SIGKILL the process and reap it, so it is absent from a dump."""
        p = self.members[role]
        p.killed = True
        _procs.signal_group(p, signal.SIGKILL)
        try:
            p.popen.wait(timeout=10)
        except subprocess.TimeoutExpired as e:
            raise ScenarioError(f"{role} (pid {p.pid}) did not die on SIGKILL") from e

    def steps(self, role: str) -> list[tuple[int, int]]:
        """(step, global_step) of every step line in role's log; for a job that logs no
        step, of every step its flight recorder wrote down."""
        logged = [(int(a), int(b)) for a, b in STEP_RE.findall(self.log_text(role))]
        return logged or self.recorded_steps(role)

    def recorded_steps(self, role: str) -> list[tuple[int, int]]:
        proc = self.members.get(role)
        if proc is None or not self.params.get("recorder"):
            return []
        job, _, task = role.partition(":")
        path = self.workdir / "flight" / f"{job}-{task}-{proc.pid}" / "flight.json"
        try:
            steps = json.loads(path.read_text()).get("steps") or []
        except (OSError, ValueError, AttributeError):
            return []  # not written yet, or caught half-way (it is replaced atomically)
        return [(i + 1, int(s[2])) for i, s in enumerate(steps) if len(s) > 2 and s[2] is not None]

    def mount_fuse(self, **options: str) -> FuseMount:
        fm = FuseMount(self.workdir / "ckpt", self.workdir / "ckpt-backing", self.control_dir)
        fm.mountpoint.mkdir(exist_ok=True)
        fm.root.mkdir(exist_ok=True)
        self.fuse = fm
        argv = _procs.python_program(
            "fuse_passthrough.py",
            f"--root={fm.root}",
            f"--mountpoint={fm.mountpoint}",
            f"--block_flag={fm.block_flag}",
            *(f"--{k}={v}" for k, v in options.items()),
        )
        fm.daemon = _procs.spawn("fuse", argv, self.log_dir)
        self.aux["fuse"] = fm.daemon
        self._register(f"fuse {fm.daemon.pid} {fm.mountpoint}")
        if not _procs.wait_until(lambda: _procs.mounted(fm.mountpoint), 20, 0.1):
            raise ScenarioError(
                f"FUSE mount at {fm.mountpoint} did not appear:\n"
                f"{_procs.tail(fm.daemon.stderr_path)}"
            )
        return fm

    def elapsed(self) -> float:
        return time.monotonic() - self._started_at

    def diagnostics(self) -> str:
        parts = []
        for role, p in {**self.members, **self.aux}.items():
            state = (
                _procs.proc_state(p.pid)
                if p.popen.poll() is None
                else (f"exited {p.popen.returncode}")
            )
            parts.append(
                f"--- {role} pid {p.pid} state {state}; {p.stderr_path}:\n"
                f"{_procs.tail(p.stderr_path, 12)}"
            )
        return "\n".join(parts)

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """End everything this run started. Idempotent; every wait is bounded."""
        if self._cleaned:
            return
        self._cleaned = True
        with self._lock:
            self._stop.set()
        fm = self.fuse
        if fm is not None and fm.daemon is not None:
            # The daemon goes first: writers blocked on it then get ENOTCONN and can exit.
            _procs.signal_group(fm.daemon, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                fm.daemon.popen.wait(timeout=10)
        if fm is not None:
            self._unmount(fm.mountpoint)
        stuck = _procs.terminate_all(list(self.members.values()) + list(self.aux.values()))
        if stuck:
            self.cleanup_problems.append(f"could not reap: {', '.join(stuck)}")
        if fm is not None and _procs.mounted(fm.mountpoint):
            self._unmount(fm.mountpoint)
        if self._driver is not None:
            self._driver.join(timeout=5)
        if self._reaper is not None:  # its job is done
            _procs.terminate_all([self._reaper], grace=0)

    # The reaper cleans up after a harness that dies without reaching close() (SIGKILL,
    # OOM, a CI job timeout): stopped TF processes and a frozen FUSE mount would otherwise
    # outlive it. It reads the registry of everything started.
    def _start_reaper(self) -> None:
        self._registry = self.control_dir / "started.txt"
        self._registry.write_text("")
        self._reaper = _procs.spawn(
            "reaper",
            _procs.python_program(
                "reaper.py",
                f"--parent={os.getpid()}",
                f"--registry={self._registry}",
                f"--workdir={self.workdir}",
            ),
            self.log_dir,
        )

    def _register(self, line: str) -> None:
        with open(self._registry, "a") as f:
            f.write(line + "\n")

    def _unmount(self, mountpoint: Path) -> None:
        for argv in (
            ["fusermount3", "-u", "-z", str(mountpoint)],
            ["umount", "-l", str(mountpoint)],
        ):
            if not _procs.mounted(mountpoint):
                return
            try:
                subprocess.run(argv, capture_output=True, timeout=15, check=False)
            except (OSError, subprocess.TimeoutExpired) as e:
                self.cleanup_problems.append(f"{' '.join(argv)}: {e}")
        if _procs.mounted(mountpoint):
            self.cleanup_problems.append(f"{mountpoint} is still mounted")
