"""The seven scenarios: each reproduces one hang class on a real local TF cluster."""

from __future__ import annotations

import argparse
import os
import re
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from postmortem.scenarios import _procs
from postmortem.scenarios.base import Scenario, ScenarioError, ScenarioRun, Truth, parse_role
from postmortem.scenarios.programs import _common as m

SUPERVISOR_SAVE = "supervisor_save.py"
SYNC_REPLICAS = "sync_replicas.py"
LOCK_DEADLOCK = "lock_deadlock.py"

SAVE_PATH_LINE = "Saving checkpoint to path"
OVERSIZE_ERROR = "Cannot encode a Tensor that exceeds the 2GB protobuf limit"
CREATE_SESSION_WAITING = "CreateSession still waiting for response from worker: {task}"
VARIABLE_RE = re.compile(r"INFO variable (\S+) shape \[([^\]]*)\] bytes (\d+) device (\S+)")
TWO_GIB = 2**31
CHIEF = "worker:0"


def var_flags(variables: Sequence[str | tuple[str, Sequence[int]]]) -> list[str]:
    """("w:10x2" | ("w", [10, 2])) -> ["--var=w:10x2"]."""
    flags = []
    for v in variables:
        if isinstance(v, str):
            spec = v
        else:
            name, shape = v
            spec = f"{name}:{'x'.join(str(d) for d in shape)}"
        try:
            m.parse_var_spec(spec)  # validate early, in the harness
        except (ValueError, argparse.ArgumentTypeError) as e:
            raise ScenarioError(f"bad variable spec {v!r}: want 'NAME:D1xD2'") from e
        flags.append(f"--var={spec}")
    return flags


def tf_task(role: str) -> str:
    job, index = parse_role(role)
    return f"/job:{job}/task:{index}"


def launch_cluster(
    run: ScenarioRun, program: str, worker_flags: Sequence[str], skip: Sequence[str] = ()
) -> None:
    """Plan ports, start every ps then every worker (except `skip`), all with the same flags."""
    p = run.params
    run.plan_cluster(p["num_ps"], p["num_workers"])
    for role in run.roles("ps"):
        if role not in skip:
            run.spawn_member(role, program, *worker_flags)
    for role in run.roles("worker"):
        if role not in skip:
            run.spawn_member(role, program, *worker_flags)


def save_began_without_done(run: ScenarioRun, role: str) -> bool:
    text = run.log_text(role)
    begin = text.rfind(m.SAVE_BEGIN)
    return begin >= 0 and m.SAVE_DONE not in text[begin:]


def settle_without_save_done(run: ScenarioRun, role: str, secs: float) -> None:
    """The hang holds for `secs`: the save began and no "save done" follows."""
    if not save_began_without_done(run, role):
        raise ScenarioError(f"{role} did not start a save")
    run.sleep(secs)
    if not save_began_without_done(run, role):
        raise ScenarioError(f"{role}'s save completed: no hang")


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def ps_variables(run: ScenarioRun, role: str = CHIEF) -> list[tuple[str, int, str]]:
    """(name, bytes, device) of each variable, as the worker logged them."""
    return [(n, int(b), d) for n, _shape, b, d in VARIABLE_RE.findall(run.log_text(role))]


def device_role(device: str) -> str | None:
    found = re.search(r"/job:(ps|worker)/task:(\d+)", device)
    return f"{found.group(1)}:{found.group(2)}" if found else None


class _ClusterScenario(Scenario):
    common: ClassVar[Mapping[str, Any]] = {
        "num_ps": 1,
        "num_workers": 1,
        "step_sleep": 0.05,
        "recorder": False,  # run postmortem.recorder in every process (the flight recorder)
        "recorder_stall_s": 0.0,  # its watchdog's threshold (0: 20x the median step, >= 30 s)
        "recorder_auto_capture": False,  # its watchdog starts `postmortem capture --discover`
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        var_flags(params.get("vars", ()))


# 1 ---------------------------------------------------------------------------------------
class PsFrozenDuringSave(_ClusterScenario):
    name = "ps-frozen-during-save"
    description = (
        "A ps is SIGSTOPped (or SIGKILLed) as the chief starts a non-sharded "
        "Saver.save: the save waits on it forever."
    )
    hang_class = "peer-unresponsive"
    defaults = {
        **_ClusterScenario.common,
        "culprit": "ps:0",
        "fault": "stop",  # or "kill": the ps is dead; the chief retries the save
        "vars": (),
        "save_after_steps": 20,
        "settle_secs": 3.0,
        "retry_secs": 3.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        if parse_role(params["culprit"])[0] != "ps":
            raise ScenarioError("ps-frozen-during-save: the culprit must be a ps task")
        if params["fault"] not in ("stop", "kill"):
            raise ScenarioError("fault must be 'stop' or 'kill'")

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.checkpoint_dir = run.workdir / "ckpt"
        retry = p["retry_secs"] if p["fault"] == "kill" else 0
        launch_cluster(
            run,
            SUPERVISOR_SAVE,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_after_steps={p['save_after_steps']}",
                f"--save_gate={run.control_dir / 'save_gate'}",
                f"--retry_failed_save_secs={retry}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        run.wait_log(CHIEF, m.SAVE_BEGIN, 150)
        if p["fault"] == "stop":
            run.stop_member(p["culprit"])
        else:
            run.kill_member(p["culprit"])
        touch(run.control_dir / "save_gate")
        if p["fault"] == "stop":
            settle_without_save_done(run, CHIEF, p["settle_secs"])
        else:
            run.wait_log(CHIEF, m.SAVE_FAILED, 60)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        culprit, task = p["culprit"], tf_task(p["culprit"])
        if p["fault"] == "stop":
            return Truth(
                self.hang_class,
                culprit,
                f"Saver.save (save/SaveV2 on /job:worker/task:0) waiting on RecvTensor from {task}",
                f"{culprit} was SIGSTOPped right after the chief logged 'save began'; "
                f"the chief's main thread blocks in Saver.save -> session.run with no gRPC "
                f"deadline. Non-sharded Saver under replica_device_setter: SaveV2 runs on "
                f"the worker and pulls every variable from the ps.",
                ("Saver.save", culprit),
            )
        return Truth(
            self.hang_class,
            culprit,
            f"Saver.save (save/SaveV2 on /job:worker/task:0) retried every "
            f"{p['retry_secs']:g}s, each failing UNAVAILABLE: {task} is dead",
            f"{culprit} was SIGKILLed right after the chief logged 'save began' (absent "
            f"from any dump); the chief logs the full error and retries the save forever.",
            ("Saver.save", "UNAVAILABLE", f"/job:ps/replica:0/task:{parse_role(culprit)[1]}"),
        )


# 2 ---------------------------------------------------------------------------------------
class OversizedVariableSave(_ClusterScenario):
    name = "oversized-variable-save"
    description = (
        "A >= 2 GiB ps variable saved by a non-sharded Saver on the worker: the "
        "tensor cannot cross gRPC; the chief retries the save forever."
    )
    hang_class = "oversized-tensor-transfer"
    defaults = {
        **_ClusterScenario.common,
        "vars": ("test_weight1:24500000x22",),
        "save_after_steps": 5,
        "retry_secs": 5.0,
    }

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.checkpoint_dir = run.workdir / "ckpt"
        launch_cluster(
            run,
            SUPERVISOR_SAVE,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_after_steps={p['save_after_steps']}",
                f"--retry_failed_save_secs={p['retry_secs']}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        run.wait_log(CHIEF, OVERSIZE_ERROR, 240)

    def _biggest(self, run: ScenarioRun) -> tuple[str, int, str] | None:
        found = [v for v in ps_variables(run) if v[1] >= TWO_GIB]
        return max(found, key=lambda v: v[1]) if found else None

    def truth(self, run: ScenarioRun) -> Truth:
        big = self._biggest(run)
        culprit = device_role(big[2]) if big else "ps:0"
        name = big[0] if big else "?"
        size = f"{big[1] / 1e9:.3f} GB = {big[1] / 2**30:.3f} GiB" if big else ">= 2 GiB"
        return Truth(
            self.hang_class,
            culprit,
            f"Saver.save (save/SaveV2 on /job:worker/task:0) pulling {name} ({size}) via "
            f"RecvTensor from {tf_task(culprit or 'ps:0')}: exceeds the 2 GiB protobuf limit",
            f"TF 2.21 fails with InternalError '{OVERSIZE_ERROR}' instead of hanging "
            f"(older releases hung at high CPU, tensorflow#6117); the chief logs the error "
            f"and retries every {run.params['retry_secs']:g}s. Fix: Saver(sharded=True) or "
            f"partition the variable.",
            ("Saver.save", name),
        )


# 3 ---------------------------------------------------------------------------------------
class SyncReplicasStall(_ClusterScenario):
    name = "sync-replicas-stall"
    description = (
        "SyncReplicasOptimizer with one replica stopped: every step waits for "
        "it while the chief's Supervisor keeps saving checkpoints (#12090)."
    )
    hang_class = "training-stalled"
    defaults = {
        **_ClusterScenario.common,
        "num_workers": 2,
        "culprit": "worker:1",
        "fault": "stop",  # or "kill"
        "vars": (),
        "save_model_secs": 3.0,
        "fault_after_global_step": 30,
        "stall_secs": 8.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        job, index = parse_role(params["culprit"])
        if job != "worker" or index == 0:
            raise ScenarioError(
                "sync-replicas-stall: the culprit must be a non-chief worker (worker:1 or "
                "above): the chief runs the checkpoint thread whose saves are the symptom"
            )
        if params["num_workers"] < 2:
            raise ScenarioError("sync-replicas-stall needs at least 2 workers")
        if params["fault"] not in ("stop", "kill"):
            raise ScenarioError("fault must be 'stop' or 'kill'")

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.checkpoint_dir = run.workdir / "ckpt"
        launch_cluster(
            run,
            SYNC_REPLICAS,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_model_secs={p['save_model_secs']}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        culprit = p["culprit"]

        def trained() -> bool:
            chief = run.steps(CHIEF)
            return (
                bool(chief)
                and chief[-1][1] >= p["fault_after_global_step"]
                and all(run.steps(r) for r in run.roles("worker"))
            )

        run.wait_for(
            f"global_step {p['fault_after_global_step']} on every worker", trained, 180, 0.25
        )
        if p["fault"] == "stop":
            run.stop_member(culprit)
        else:
            run.kill_member(culprit)

        def stalled() -> bool:
            text = run.log_text(CHIEF)
            last = list(re.finditer(r"INFO step \d+ global_step (\d+)", text))
            if not last:
                return False
            saves_after = text.count(SAVE_PATH_LINE, last[-1].end())
            key = (len(last), last[-1].group(1))
            if key != stalled.key:  # type: ignore[attr-defined]
                stalled.key, stalled.since = key, run.elapsed()  # type: ignore[attr-defined]
                return False
            frozen_for = run.elapsed() - stalled.since  # type: ignore[attr-defined]
            if frozen_for >= p["stall_secs"] and saves_after >= 2:
                run.facts.update(
                    frozen_global_step=int(last[-1].group(1)),
                    frozen_for_secs=round(frozen_for, 1),
                    saves_while_frozen=saves_after,
                )
                return True
            return False

        stalled.key, stalled.since = None, 0.0  # type: ignore[attr-defined]
        run.wait_for("the chief's step counter to freeze while saves continue", stalled, 90, 0.5)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        culprit = p["culprit"]
        how = "SIGSTOPped" if p["fault"] == "stop" else "SIGKILLed"
        return Truth(
            self.hang_class,
            culprit,
            f"chief's session.run(train_op) waits on the sync_token_q: SyncReplicasOptimizer "
            f"needs {p['num_workers']} gradients per step and {culprit} sends none",
            f"{culprit} was {how} after global_step {p['fault_after_global_step']}. "
            f"The chief's Supervisor checkpoint thread keeps logging '{SAVE_PATH_LINE}' "
            f"every {p['save_model_secs']:g}s and its saves complete: the save is the symptom, "
            f"the stalled training loop the problem (tensorflow#12090).",
            ("session.run(train_op)", CHIEF),
        )


# 4 ---------------------------------------------------------------------------------------
FUSE_WAIT_CHANNELS = ("request_wait_answer", "fuse")


def fuse_blocked_threads(pid: int) -> list[_procs.ThreadState]:
    return [
        t
        for t in _procs.threads(pid)
        if t.state in ("S", "D") and any(w in t.wchan for w in FUSE_WAIT_CHANNELS)
    ]


class StorageStall(_ClusterScenario):
    name = "storage-stall"
    description = (
        "The checkpoint directory is a FUSE mount whose writes stop answering "
        "(a hung NFS): the saving thread waits in the kernel."
    )
    hang_class = "storage-stall"
    defaults = {
        **_ClusterScenario.common,
        "vars": (),
        "save_after_steps": 20,
        "settle_secs": 3.0,
        # Send the blocked writer a SIGINT (an operator's Ctrl-C): the kernel then turns
        # FUSE's interruptible wait into an uninterruptible one, state D, as on a hung
        # hard-mounted NFS. False leaves it in S (request_wait_answer).
        "interrupt_writer": True,
    }

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        fm = run.mount_fuse()
        run.checkpoint_dir = fm.mountpoint
        launch_cluster(
            run,
            SUPERVISOR_SAVE,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_after_steps={p['save_after_steps']}",
                f"--save_gate={run.control_dir / 'save_gate'}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        assert run.fuse is not None
        run.wait_log(CHIEF, m.SAVE_BEGIN, 150)
        touch(run.fuse.block_flag)
        touch(run.control_dir / "save_gate")
        pid = run.members[CHIEF].pid
        blocked = run.wait_for(
            "a thread of worker:0 waiting on the FUSE daemon",
            lambda: fuse_blocked_threads(pid),
            60,
            0.2,
        )
        t = blocked[0]
        run.facts.update(
            blocked_tid=t.tid,
            blocked_comm=t.comm,
            blocked_wchan=t.wchan,
            blocked_state_before_interrupt=t.state,
        )
        if p["interrupt_writer"]:
            os.kill(t.tid, signal.SIGINT)  # a tid picks that thread when it can take it
            run.wait_for(
                f"thread {t.tid} of worker:0 to enter state D",
                lambda: _procs.proc_state(pid, t.tid) == "D",
                10,
                0.1,
            )
        settle_without_save_done(run, CHIEF, p["settle_secs"])
        run.facts["blocked_state"] = _procs.proc_state(pid, t.tid)

    def truth(self, run: ScenarioRun) -> Truth:
        return Truth(
            self.hang_class,
            CHIEF,
            "Saver.save (save/SaveV2 on /job:worker/task:0): a TF executor thread is blocked "
            "in write() on the checkpoint filesystem (FUSE request never answered)",
            f"The checkpoint dir {run.checkpoint_dir} is a FUSE passthrough mount whose write "
            f"handler stopped answering, like a hung NFS/HDFS client. The blocked thread waits "
            f"in request_wait_answer (state S until signalled; the harness sends it SIGINT "
            f"unless interrupt_writer=False, so it is in D); the chief's main thread waits in "
            f"Saver.save -> session.run. A blocking `py-spy dump` (without --nonblocking) "
            f"hangs on this process.",
            ("SaveV2", CHIEF),
        )


# 5 ---------------------------------------------------------------------------------------
GOT_A = "got lock A (train_stats_lock), waiting B (checkpoint_lock)"
GOT_B = "got lock B (checkpoint_lock), waiting A (train_stats_lock)"


class SaverLockDeadlock(_ClusterScenario):
    name = "saver-lock-deadlock"
    description = (
        "The training loop and a checkpoint-saver thread take two Python locks "
        "in opposite order: a real deadlock in the worker."
    )
    hang_class = "lock-deadlock"
    defaults = {
        **_ClusterScenario.common,
        "vars": (),
        "saver_thread_name": "checkpoint-saver",
        "deadlock_after_steps": 40,
        "save_secs": 1.0,
        "settle_secs": 3.0,
    }

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.checkpoint_dir = run.workdir / "ckpt"
        launch_cluster(
            run,
            LOCK_DEADLOCK,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--saver_thread_name={p['saver_thread_name']}",
                f"--deadlock_after_steps={p['deadlock_after_steps']}",
                f"--save_secs={p['save_secs']}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        run.wait_for(
            "both lock markers in worker:0's log",
            lambda: GOT_A in (t := run.log_text(CHIEF)) and GOT_B in t,
            150,
        )
        steps = len(run.steps(CHIEF))
        run.sleep(run.params["settle_secs"])
        if len(run.steps(CHIEF)) != steps:
            raise ScenarioError("worker:0 kept stepping after both lock markers: no deadlock")

    def truth(self, run: ScenarioRun) -> Truth:
        name = run.params["saver_thread_name"]
        return Truth(
            self.hang_class,
            CHIEF,
            f"MainThread holds train_stats_lock and waits for checkpoint_lock; thread "
            f"'{name}' holds checkpoint_lock (after Saver.save) and waits for train_stats_lock",
            "Two threading.Lock objects taken in opposite order by the training loop and the "
            "checkpoint-saver thread. TF itself is idle; the ps is healthy.",
            ("MainThread", "checkpoint_lock", name),
        )


# 6 ---------------------------------------------------------------------------------------
class PsUnreachableAtStartup(_ClusterScenario):
    name = "ps-unreachable-at-startup"
    description = (
        "Nothing answers at a ps address: the worker waits in session creation, "
        "logging 'CreateSession still waiting'."
    )
    hang_class = "peer-unreachable"
    defaults = {
        **_ClusterScenario.common,
        "culprit": "ps:0",
        "fault": "never-started",  # or "kill": started, then SIGKILLed before the workers
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        if parse_role(params["culprit"])[0] != "ps":
            raise ScenarioError("ps-unreachable-at-startup: the culprit must be a ps task")
        if params["fault"] not in ("never-started", "kill"):
            raise ScenarioError("fault must be 'never-started' or 'kill'")

    def _flags(self, run: ScenarioRun) -> list[str]:
        return [
            f"--checkpoint_dir={run.checkpoint_dir}",
            f"--step_sleep={run.params['step_sleep']}",
        ]

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.checkpoint_dir = run.workdir / "ckpt"
        run.plan_cluster(p["num_ps"], p["num_workers"])
        # "never-started": the culprit's port stays free. "kill": every ps starts, and the
        # workers start only after the driver has killed the culprit.
        later = run.roles("worker") if p["fault"] == "kill" else [p["culprit"]]
        for role in run.roles("ps") + run.roles("worker"):
            if role not in later:
                run.spawn_member(role, SUPERVISOR_SAVE, *self._flags(run))

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        if p["fault"] == "kill":
            run.wait_servers_ready([p["culprit"]], 90)
            run.kill_member(p["culprit"])
            for role in run.roles("worker"):
                run.spawn_member(role, SUPERVISOR_SAVE, *self._flags(run))
        line = CREATE_SESSION_WAITING.format(
            task=f"/job:ps/replica:0/task:{parse_role(p['culprit'])[1]}"
        )
        run.wait_for(
            f"{line!r} in a worker's log",
            lambda: any(line in run.log_text(r) for r in run.roles("worker")),
            90,
            0.5,
        )

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        how = (
            "was never started"
            if p["fault"] == "never-started"
            else "was SIGKILLed before the workers started"
        )
        return Truth(
            self.hang_class,
            p["culprit"],
            f"session creation (Supervisor.prepare_or_wait_for_session -> "
            f"BaseSession._extend_graph) waiting for {tf_task(p['culprit'])}",
            f"{p['culprit']} {how}: nothing listens at {run.addresses.get(p['culprit'])}. "
            f"The master logs 'CreateSession still waiting for response from worker' "
            f"about every 10 s.",
            ("session creation", p["culprit"]),
        )


# 7 ---------------------------------------------------------------------------------------
class HealthySlowSave(_ClusterScenario):
    name = "healthy-slow-save"
    description = (
        "A large checkpoint written to a slow but working filesystem: the save "
        "takes a minute and its temp file keeps growing. Not a hang."
    )
    hang_class = "save-progressing"
    defaults = {
        **_ClusterScenario.common,
        "vars": ("embedding:2000000x32",),  # 256 MB
        "write_bytes_per_sec": 4_000_000,
        "save_after_steps": 10,
        "growth_samples": 3,
        "sample_secs": 1.0,
    }

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        fm = run.mount_fuse(write_bytes_per_sec=str(p["write_bytes_per_sec"]))
        run.checkpoint_dir = fm.mountpoint
        launch_cluster(
            run,
            SUPERVISOR_SAVE,
            [
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_after_steps={p['save_after_steps']}",
                f"--step_sleep={p['step_sleep']}",
                *var_flags(p["vars"]),
            ],
        )

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        assert run.fuse is not None
        root = run.fuse.root
        run.wait_log(CHIEF, m.SAVE_BEGIN, 150)
        history: list[dict[str, int]] = []

        def growing() -> bool:
            history.append(temp_data_files(root))
            if len(history) <= p["growth_samples"]:
                return False
            window = history[-(p["growth_samples"] + 1) :]
            for path in window[-1]:
                sizes = [h.get(path, -1) for h in window]
                if sizes[0] >= 0 and all(a < b for a, b in zip(sizes, sizes[1:], strict=False)):
                    total = sum(b for _n, b, _d in ps_variables(run))
                    rate = (sizes[-1] - sizes[0]) / (p["sample_secs"] * (len(sizes) - 1))
                    run.facts.update(
                        temp_file=path,
                        temp_file_sizes=sizes,
                        checkpoint_bytes=total,
                        estimated_save_secs=round(total / rate, 1),
                    )
                    return True
            return False

        run.wait_for("a temp checkpoint file that keeps growing", growing, 120, p["sample_secs"])

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        rate = p["write_bytes_per_sec"] / 1e6
        return Truth(
            self.hang_class,
            None,
            f"Saver.save (save/SaveV2 on /job:worker/task:0) writing at ~{rate:g} MB/s "
            f"to a slow filesystem; progressing",
            f"The checkpoint dir {run.checkpoint_dir} is a FUSE mount that sleeps per write "
            f"chunk; the temp checkpoint file grows steadily and the save completes "
            f"(~{self._size(run) / 1e6:.0f} MB, ~{self._size(run) / p['write_bytes_per_sec']:.0f}s "
            f"in all).",
            ("Saver.save", "writing"),
        )

    @staticmethod
    def _size(run: ScenarioRun) -> int:
        return sum(b for _n, b, _d in ps_variables(run))


def temp_data_files(root: Path) -> dict[str, int]:
    """Sizes of in-progress checkpoint data files under root (name contains 'temp')."""
    sizes = {}
    for path in root.rglob("*"):
        if "temp" in path.name and ".data-" in path.name or "_temp" in str(path.parent):
            try:
                sizes[str(path)] = path.stat().st_size
            except OSError:
                continue
    return sizes


# 8 ---------------------------------------------------------------------------------------
MTS_TRAIN = "mts_train.py"
INDEX_FILE = re.compile(r"\.index$")


def checkpoints_written(directory: Path | None) -> int:
    if directory is None or not directory.is_dir():
        return 0
    return sum(1 for p in directory.iterdir() if INDEX_FILE.search(p.name))


def _training_flags(run: ScenarioRun) -> tuple[str, list[str]]:
    """The program and flags of a healthy job: async MonitoredTrainingSession, or
    SyncReplicasOptimizer under a Supervisor."""
    p = run.params
    common = [
        f"--checkpoint_dir={run.checkpoint_dir}",
        f"--step_sleep={p['step_sleep']}",
        *var_flags(p["vars"]),
    ]
    if p["mode"] == "sync":
        flags = [*common, f"--save_model_secs={p['save_secs']}"]
        if p.get("replicas_to_aggregate"):
            flags.append(f"--replicas_to_aggregate={p['replicas_to_aggregate']}")
        return SYNC_REPLICAS, flags
    flags = [*common, f"--save_checkpoint_secs={p['save_secs']}", f"--log_format={p['log_format']}"]
    if not p["sharded"]:
        flags.append("--unsharded")
    return MTS_TRAIN, flags


def launch_training(run: ScenarioRun) -> None:
    run.checkpoint_dir = run.workdir / "ckpt"
    program, flags = _training_flags(run)
    launch_cluster(run, program, flags)


def steady(
    run: ScenarioRun, roles: list[str], min_steps: int, checkpoints: int, timeout: float
) -> None:
    """Until every role has logged `min_steps` step lines and the chief saved checkpoints."""
    run.wait_for(
        f"{min_steps} step lines on {', '.join(roles)} and {checkpoints} checkpoint(s)",
        lambda: (
            all(len(run.steps(r)) >= min_steps for r in roles)
            and checkpoints_written(run.checkpoint_dir) >= checkpoints
        ),
        timeout,
        0.5,
    )


def keeps_stepping(run: ScenarioRun, role: str, steps: int, timeout: float) -> int:
    """Until `role`'s global step has advanced `steps` more: returns how many it did."""
    first = run.steps(role)[-1][1]
    run.wait_for(
        f"{role} to advance {steps} global steps",
        lambda: run.steps(role)[-1][1] >= first + steps,
        timeout,
        0.25,
    )
    return run.steps(role)[-1][1] - first


class HealthyTraining(_ClusterScenario):
    name = "healthy-training"
    description = (
        "A job that trains and saves normally (async MonitoredTrainingSession, or "
        "SyncReplicasOptimizer under a Supervisor): nothing to find."
    )
    hang_class = "healthy"
    defaults = {
        **_ClusterScenario.common,
        "num_workers": 2,
        "mode": "async",  # or "sync"
        "vars": (),
        "save_secs": 2.0,
        "sharded": True,
        # TensorFlow's own lines, with no timestamp; "timestamped"; or "none" (no step line at
        # all: only the flight recorder shows progress, so it needs recorder=true)
        "log_format": "tf",
        "replicas_to_aggregate": 0,
        "min_steps": 5,
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        if params["mode"] not in ("async", "sync"):
            raise ScenarioError("mode must be 'async' or 'sync'")
        if params["log_format"] not in ("tf", "timestamped", "none"):
            raise ScenarioError("log_format must be 'tf', 'timestamped' or 'none'")
        if params["log_format"] == "none" and (params["mode"] != "async" or not params["recorder"]):
            raise ScenarioError(
                "log_format=none needs mode=async and recorder=true: without step lines only "
                "the flight recorder shows the job's progress"
            )

    def launch(self, run: ScenarioRun) -> None:
        launch_training(run)

    def drive(self, run: ScenarioRun) -> None:
        workers = run.roles("worker")
        steady(run, workers, run.params["min_steps"], 2, 180)
        run.facts["advanced"] = keeps_stepping(run, CHIEF, 5, 60)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        how = (
            "asynchronous MonitoredTrainingSession"
            if p["mode"] == "async"
            else ("SyncReplicasOptimizer under a Supervisor")
        )
        return Truth(
            self.hang_class,
            None,
            "none: training advances",
            f"{how}, {p['num_ps']} ps and {p['num_workers']} workers, step sleep "
            f"{p['step_sleep']:g}s, a checkpoint every {p['save_secs']:g}s; no fault.",
        )


# 9 ---------------------------------------------------------------------------------------
class DegradedWorkerLost(_ClusterScenario):
    name = "degraded-worker-lost"
    description = (
        "A non-chief worker stops (or dies) and training goes on without it: asynchronous "
        "training, or synchronous with a backup replica."
    )
    hang_class = "degraded"
    defaults = {
        **HealthyTraining.defaults,
        "culprit": "worker:1",
        "fault": "stop",  # or "kill"
    }

    def validate(self, params: dict[str, Any]) -> None:
        super().validate(params)
        job, index = parse_role(params["culprit"])
        if job != "worker" or index == 0:
            raise ScenarioError("degraded-worker-lost: the culprit must be a non-chief worker")
        if params["fault"] not in ("stop", "kill"):
            raise ScenarioError("fault must be 'stop' or 'kill'")
        if params["mode"] == "sync" and not params["replicas_to_aggregate"]:
            # Without backup replicas a lost replica stalls every step: training-stalled.
            params["replicas_to_aggregate"] = params["num_workers"] - 1

    def launch(self, run: ScenarioRun) -> None:
        launch_training(run)

    def drive(self, run: ScenarioRun) -> None:
        steady(run, run.roles("worker"), run.params["min_steps"], 1, 180)
        culprit = run.params["culprit"]
        if run.params["fault"] == "stop":
            run.stop_member(culprit)
        else:
            run.kill_member(culprit)
        run.facts["advanced_after_fault"] = keeps_stepping(run, CHIEF, 20, 90)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        how = "SIGSTOPped" if p["fault"] == "stop" else "SIGKILLed"
        return Truth(
            self.hang_class,
            p["culprit"],
            "none blocked",
            f"{p['culprit']} was {how} while the job trained ({p['mode']}); the chief went "
            f"on stepping ({run.facts.get('advanced_after_fault')} global steps verified).",
            (p["culprit"],),
        )


SCENARIO_LIST: list[Scenario] = [
    PsFrozenDuringSave(),
    OversizedVariableSave(),
    SyncReplicasStall(),
    StorageStall(),
    SaverLockDeadlock(),
    PsUnreachableAtStartup(),
    HealthySlowSave(),
    HealthyTraining(),
    DegradedWorkerLost(),
]
