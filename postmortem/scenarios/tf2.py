"""TensorFlow 2 strategy scenarios: MultiWorkerMirroredStrategy jobs configured by
TF_CONFIG, with a custom training loop (postmortem/scenarios/programs/mwms_train.py).

MWMS workers catch SIGTERM and keep running; the harness ends them with SIGKILL by
process group after its grace period, as it ends every member.
"""

from __future__ import annotations

import re
from typing import Any

from postmortem.scenarios.base import Scenario, ScenarioError, ScenarioRun, Truth, parse_role
from postmortem.scenarios.programs import _common as m

MWMS_TRAIN = "mwms_train.py"
MWMS = "MultiWorkerMirroredStrategy"
SAVE_BEGAN = re.compile(rf"INFO {m.SAVE_BEGIN} (\d+)")
SKIPPED = re.compile(r"INFO (?:waiting for the chief's checkpoint|evaluating locally) ")


class MwmsPartialSave(Scenario):
    name = "mwms-partial-save"
    description = (
        "MultiWorkerMirroredStrategy, custom loop: some workers save a tf.train.Checkpoint "
        "and the others do not. The save all-reduces a sync-on-read variable that the "
        "others never join: it waits forever, silently."
    )
    hang_class = "collective-mismatch"
    defaults = {
        "num_workers": 2,
        "skip_save": "worker:1",  # the workers that do not save, comma-separated
        "skip_action": "wait",  # "wait" for the chief's checkpoint, or "evaluate" locally
        "api": "checkpoint",  # tf.train.Checkpoint.save, or "manager" (CheckpointManager)
        "save_every_steps": 40,
        "step_sleep": 0.05,
        "settle_secs": 4.0,
        "recorder": False,  # run postmortem.recorder's step and save marks in every worker
    }

    def skipped(self, params: dict[str, Any]) -> list[str]:
        return [r.strip() for r in str(params["skip_save"]).split(",") if r.strip()]

    def validate(self, params: dict[str, Any]) -> None:
        if not 2 <= params["num_workers"] <= 8:
            raise ScenarioError("mwms-partial-save needs 2 to 8 workers")
        skipped = self.skipped(params)
        if not skipped:
            raise ScenarioError("skip_save must name at least one worker (worker:N)")
        for role in skipped:
            job, index = parse_role(role)
            if job != "worker" or index >= params["num_workers"]:
                raise ScenarioError(f"skip_save: {role} is not a worker of this job")
        if len(set(skipped)) >= params["num_workers"]:
            raise ScenarioError("skip_save: at least one worker must save")
        if params["skip_action"] not in ("wait", "evaluate"):
            raise ScenarioError("skip_action must be 'wait' or 'evaluate'")
        if params["api"] not in ("checkpoint", "manager"):
            raise ScenarioError("api must be 'checkpoint' or 'manager'")
        if params["save_every_steps"] < 2:
            raise ScenarioError("save_every_steps must be at least 2")

    def extra_flags(self, run: ScenarioRun) -> list[str]:
        """Flags a variant of this job adds to every worker's."""
        return []

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.plan_cluster(0, p["num_workers"])
        run.checkpoint_dir = run.workdir / "ckpt"
        skip = ",".join(str(parse_role(r)[1]) for r in self.skipped(p))
        for role in run.roles("worker"):
            run.spawn_member(
                role,
                MWMS_TRAIN,
                f"--checkpoint_dir={run.checkpoint_dir}",
                f"--save_every_steps={p['save_every_steps']}",
                f"--step_sleep={p['step_sleep']}",
                f"--skip_save_tasks={skip}",
                f"--skip_action={p['skip_action']}",
                f"--api={p['api']}",
                *self.extra_flags(run),
                tf_config=True,
            )

    def savers(self, run: ScenarioRun) -> list[str]:
        skipped = set(self.skipped(run.params))
        return [r for r in run.roles("worker") if r not in skipped]

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        savers, skipped = self.savers(run), self.skipped(p)

        def hung() -> bool:
            return all(
                SAVE_BEGAN.search(run.log_text(r)) and m.SAVE_DONE not in run.log_text(r)
                for r in savers
            ) and all(SKIPPED.search(run.log_text(r)) for r in skipped)

        run.wait_for("every saver in its save and every other worker past it", hung, 240, 0.25)
        run.sleep(p["settle_secs"])
        if not hung():
            raise ScenarioError("a save completed: the collective did not hang")
        run.facts["save_began_at_step"] = int(SAVE_BEGAN.findall(run.log_text(savers[0]))[-1])

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        skipped = self.skipped(p)
        savers = [r for r in run.roles("worker") if r not in skipped] or ["worker:0"]
        instead = (
            "wait for the chief's checkpoint file"
            if p["skip_action"] == "wait"
            else "run a local evaluation"
        )
        call = "CheckpointManager.save" if p["api"] == "manager" else "Checkpoint.save"
        return Truth(
            self.hang_class,
            skipped[0],
            f"{call} on {', '.join(savers)} waits in the all-reduce of a sync-on-read variable "
            f"that {', '.join(skipped)} never joins",
            f"{', '.join(skipped)} skip the save at step "
            f"{run.facts.get('save_began_at_step')} and {instead}, with no collective; "
            f"{', '.join(savers)} save and all-reduce `examples_seen` (SUM, ON_READ) forever.",
            ("collective", "Checkpoint.save" if p["api"] == "checkpoint" else "save"),
            strategy=MWMS,
        )


def _saves_on_every_worker(run: ScenarioRun) -> None:
    """A healthy job's drive: wait for `saves` completed saves in every worker's log."""
    want = run.params["saves"]
    run.wait_for(
        f"{want} completed saves on every worker",
        lambda: all(
            run.log_text(r).count(f"INFO {m.SAVE_DONE} ") >= want for r in run.roles("worker")
        ),
        240,
        0.5,
    )


class MwmsHealthyTraining(MwmsPartialSave):
    name = "mwms-healthy-training"
    description = (
        "MultiWorkerMirroredStrategy, custom loop, every worker saves (the chief to the "
        "checkpoint directory, the others to their own): nothing to find."
    )
    hang_class = "healthy"
    defaults = {**MwmsPartialSave.defaults, "skip_save": "", "saves": 2}

    def validate(self, params: dict[str, Any]) -> None:
        if self.skipped(params):
            raise ScenarioError("mwms-healthy-training: every worker saves (skip_save='')")
        if not 2 <= params["num_workers"] <= 8:
            raise ScenarioError("mwms-healthy-training needs 2 to 8 workers")

    def drive(self, run: ScenarioRun) -> None:
        _saves_on_every_worker(run)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        return Truth(
            self.hang_class,
            None,
            "none: training advances",
            f"MultiWorkerMirroredStrategy, {p['num_workers']} workers, a checkpoint every "
            f"{p['save_every_steps']} steps on every worker; no fault.",
            (),
            strategy=MWMS,
        )


class MwmsPeerLostDuringSave(MwmsPartialSave):
    name = "mwms-peer-lost-during-save"
    description = (
        "MultiWorkerMirroredStrategy, every worker saves; one is SIGKILLed as the save "
        "begins. The coordination service aborts the save within ~10 s and the others crash: "
        "not a hang, but which task was lost?"
    )
    hang_class = "peer-unresponsive"
    defaults = {**MwmsPartialSave.defaults, "skip_save": "", "culprit": "worker:1"}

    def validate(self, params: dict[str, Any]) -> None:
        if not 2 <= params["num_workers"] <= 8:
            raise ScenarioError("mwms-peer-lost-during-save needs 2 to 8 workers")
        job, index = parse_role(params["culprit"])
        if job != "worker" or index >= params["num_workers"]:
            raise ScenarioError(f"culprit {params['culprit']} is not a worker of this job")

    def extra_flags(self, run: ScenarioRun) -> list[str]:
        return [f"--save_gate={run.control_dir / 'save_gate'}"]  # the kill comes first

    def drive(self, run: ScenarioRun) -> None:
        culprit = run.params["culprit"]
        others = [r for r in run.roles("worker") if r != culprit]
        run.wait_for(
            "every worker at its first save",
            lambda: all(SAVE_BEGAN.search(run.log_text(r)) for r in run.roles("worker")),
            240,
            0.25,
        )
        for role in others:
            run.members[role].may_exit = True  # they crash when the peer is lost
        run.kill_member(culprit)
        (run.control_dir / "save_gate").touch()
        run.wait_for(
            f"the save to fail on {', '.join(others)} and the process to end",
            lambda: all(
                m.SAVE_FAILED in run.log_text(r) and not run.members[r].alive() for r in others
            ),
            90,
            0.5,
        )

    def truth(self, run: ScenarioRun) -> Truth:
        culprit = run.params["culprit"]
        return Truth(
            self.hang_class,
            culprit,
            f"every worker's Checkpoint.save in the all-reduce; {culprit} lost, the "
            "collective aborted by the coordination service",
            f"{culprit} was SIGKILLed as every worker began its first save; the others' "
            "saves failed with UnavailableError ('tasks are unhealthy (stopped sending "
            "heartbeats)') and their processes ended. The dump holds their logs.",
            (culprit,),
            strategy=MWMS,
        )


MWMS_KERAS_FIT = "mwms_keras_fit.py"
SHAPE_MISMATCH = "Shape mismatch in the collective instance"


def _need_tf_keras(name: str) -> None:
    """Keras 3 (TensorFlow 2.16+) cannot run MWMS fit: the scenario runs tf_keras."""
    import importlib.util

    if importlib.util.find_spec("tf_keras") is None:
        raise ScenarioError(
            f"{name} needs the tf-keras package (Keras 2, which runs MultiWorkerMirroredStrategy "
            "fit): pip install --no-deps tf-keras (--no-deps keeps pip from adding the full "
            "tensorflow package beside tensorflow-cpu)"
        )


class MwmsKerasFitChiefSave(Scenario):
    name = "mwms-keras-fit-chief-save"
    description = (
        "MultiWorkerMirroredStrategy, tf_keras Model.fit with a ModelCheckpoint callback on "
        "the chief only. Its save all-reduces the batch-norm statistics; the others go on to "
        "their next step, whose all-reduce has another shape: TF aborts every worker."
    )
    hang_class = "collective-mismatch"
    defaults = {
        "num_workers": 2,
        "save_on": "worker:0",  # the workers that get the ModelCheckpoint callback
        "save_freq": 40,
        "step_sleep": 0.05,
        "evaluator": False,  # a sidecar evaluator task (TF_CONFIG type evaluator) as well
    }

    def savers(self, params: dict[str, Any]) -> list[str]:
        return [r.strip() for r in str(params["save_on"]).split(",") if r.strip()]

    def validate(self, params: dict[str, Any]) -> None:
        _need_tf_keras(self.name)
        if not 2 <= params["num_workers"] <= 4:
            raise ScenarioError(f"{self.name} needs 2 to 4 workers")
        for role in self.savers(params):
            job, index = parse_role(role)
            if job != "worker" or index >= params["num_workers"]:
                raise ScenarioError(f"save_on: {role} is not a worker of this job")
        if not self.savers(params) or len(set(self.savers(params))) >= params["num_workers"]:
            raise ScenarioError("save_on: some workers save, not all")
        if params["save_freq"] < 2:
            raise ScenarioError("save_freq must be at least 2")

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.plan_cluster(0, p["num_workers"])
        run.checkpoint_dir = run.workdir / "ckpt"
        save_on = ",".join(str(parse_role(r)[1]) for r in self.savers(p))
        flags = [
            f"--checkpoint_dir={run.checkpoint_dir}",
            f"--save_on={save_on}",
            f"--save_freq={p['save_freq']}",
            f"--step_sleep={p['step_sleep']}",
        ]
        for role in run.roles("worker"):
            run.spawn_member(role, MWMS_KERAS_FIT, *flags, tf_config=True)
        if p["evaluator"]:  # not in the cluster: it only reads the checkpoints
            run.spawn_member("evaluator:0", MWMS_KERAS_FIT, *flags, tf_config=True)

    def drive(self, run: ScenarioRun) -> None:
        workers = run.roles("worker")
        for role in workers:
            run.members[role].may_exit = True  # TF aborts every worker
        run.wait_for(
            "every worker to fail on the collective and end",
            lambda: all(
                SHAPE_MISMATCH in run.log_text(r) and not run.members[r].alive() for r in workers
            ),
            240,
            0.5,
        )
        for role in self.savers(run.params):
            if not SAVE_BEGAN.search(run.log_text(role)):
                raise ScenarioError(f"{role} failed before its save began")
            if m.SAVE_DONE in run.log_text(role):
                raise ScenarioError(f"{role}'s save completed: no mismatch")
        run.facts["save_began_at_step"] = int(
            SAVE_BEGAN.findall(run.log_text(self.savers(run.params)[0]))[-1]
        )

    def truth(self, run: ScenarioRun) -> Truth:
        savers = self.savers(run.params)
        others = [r for r in run.roles("worker") if r not in savers]
        return Truth(
            self.hang_class,
            others[0],
            f"ModelCheckpoint's save on {', '.join(savers)} all-reduces the batch-norm "
            f"statistics in a collective that {', '.join(others)} never "
            f"join{'s' if len(others) == 1 else ''}; their next "
            "step's all-reduce has another shape: aborted",
            f"{', '.join(savers)} save at step {run.facts.get('save_began_at_step')} "
            f"(a ModelCheckpoint callback on them only); {', '.join(others)} "
            f"go{'es' if len(others) == 1 else ''} on training. "
            f"TF aborts every worker with '{SHAPE_MISMATCH} ...' and they exit; the dump "
            "holds their logs"
            + (" and the live sidecar evaluator." if run.params["evaluator"] else "."),
            ("collective",),
            strategy=MWMS,
        )


class MwmsKerasFitHealthy(MwmsKerasFitChiefSave):
    name = "mwms-keras-fit-healthy"
    description = (
        "MultiWorkerMirroredStrategy, tf_keras Model.fit with ModelCheckpoint on every "
        "worker (tf_keras writes the non-chief copies to temporary directories), optionally "
        "a sidecar evaluator: nothing to find."
    )
    hang_class = "healthy"
    defaults = {**MwmsKerasFitChiefSave.defaults, "save_on": "all", "saves": 2}

    def validate(self, params: dict[str, Any]) -> None:
        _need_tf_keras(self.name)
        if not 2 <= params["num_workers"] <= 4:
            raise ScenarioError(f"{self.name} needs 2 to 4 workers")
        if params["save_on"] != "all":
            raise ScenarioError(f"{self.name}: every worker saves (save_on='all')")

    def savers(self, params: dict[str, Any]) -> list[str]:
        return [f"worker:{i}" for i in range(params["num_workers"])]

    def drive(self, run: ScenarioRun) -> None:
        _saves_on_every_worker(run)

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        return Truth(
            self.hang_class,
            None,
            "none: training advances",
            f"MultiWorkerMirroredStrategy, tf_keras fit, {p['num_workers']} workers, "
            f"ModelCheckpoint every {p['save_freq']} steps on every worker"
            + (", a sidecar evaluator" if p["evaluator"] else "")
            + "; no fault.",
            (),
            strategy=MWMS,
        )


TF2_SCENARIOS: list[Scenario] = [
    MwmsPartialSave(),
    MwmsHealthyTraining(),
    MwmsPeerLostDuringSave(),
    MwmsKerasFitChiefSave(),
    MwmsKerasFitHealthy(),
]


PSS_TRAIN = "pss_train.py"
PSS = "ParameterServerStrategy"


class PssPsFrozenDuringSave(Scenario):
    name = "pss-ps-frozen-during-save"
    description = (
        "ParameterServerStrategy: a ps is SIGSTOPped as the coordinator starts its first "
        "tf.train.Checkpoint.save; the save waits on it with no error and no heartbeat."
    )
    hang_class = "peer-unresponsive"
    defaults = {
        "num_ps": 1,
        "num_workers": 1,
        "culprit": "ps:0",
        "save_after_steps": 20,
        "step_sleep": 0.05,
        "settle_secs": 4.0,
    }

    def validate(self, params: dict[str, Any]) -> None:
        if not (1 <= params["num_ps"] <= 4 and 1 <= params["num_workers"] <= 4):
            raise ScenarioError("pss-ps-frozen-during-save needs 1 to 4 ps and 1 to 4 workers")
        job, index = parse_role(params["culprit"])
        if job != "ps" or index >= params["num_ps"]:
            raise ScenarioError(f"culprit {params['culprit']} is not a ps of this job")

    def launch(self, run: ScenarioRun) -> None:
        p = run.params
        run.plan_cluster(p["num_ps"], p["num_workers"])
        run.addresses["chief:0"] = f"127.0.0.1:{_free_port()}"
        run.checkpoint_dir = run.workdir / "ckpt"
        flags = [
            f"--checkpoint_dir={run.checkpoint_dir}",
            f"--save_after_steps={p['save_after_steps']}",
            f"--save_gate={run.control_dir / 'save_gate'}",
            f"--step_sleep={p['step_sleep']}",
        ]
        for role in [*run.roles("ps"), *run.roles("worker")]:
            run.spawn_member(role, PSS_TRAIN, *flags, tf_config=True)
        run.spawn_member("chief:0", PSS_TRAIN, *flags, tf_config=True)

    def drive(self, run: ScenarioRun) -> None:
        p = run.params
        run.wait_log("chief:0", m.SAVE_BEGIN, 240)
        run.stop_member(p["culprit"])
        (run.control_dir / "save_gate").touch()
        run.sleep(p["settle_secs"])
        if m.SAVE_DONE in run.log_text("chief:0"):
            raise ScenarioError("the coordinator's save completed: no hang")

    def truth(self, run: ScenarioRun) -> Truth:
        p = run.params
        culprit = p["culprit"]
        return Truth(
            self.hang_class,
            culprit,
            f"Checkpoint.save on the coordinator (chief:0) waits in an eager op on {culprit} "
            "(var_handle_op creating the save counter)",
            f"{culprit} was SIGSTOPped right after the coordinator logged 'save began'; its "
            "first Checkpoint.save creates the save counter on a ps and waits with no "
            "deadline and no heartbeat.",
            ("Checkpoint.save", culprit),
            strategy=PSS,
        )


def _free_port() -> int:
    from postmortem.scenarios import _procs

    return _procs.free_ports(1)[0]


TF2_SCENARIOS.append(PssPsFrozenDuringSave())
