"""Real, reproducible hangs of a local distributed TensorFlow job, for tests and demos.

    from postmortem.scenarios import get_scenario
    with get_scenario("ps-frozen-during-save").start(tmp_path) as run:
        run.wait_established(timeout=120)
        run.pids, run.truth, ...

Each scenario starts a tf.compat.v1 parameter-server cluster (or a TF2 strategy's workers,
postmortem/scenarios/tf2.py) on 127.0.0.1 (every ps and
worker its own process group), injects one fault, and on exit kills every process group
it started and unmounts any FUSE mount. Needs TensorFlow (and fusepy + fuse3 for the
storage scenarios) in the environment that runs the programs; the harness itself is
standard library only.
"""

from __future__ import annotations

from postmortem.scenarios.base import Scenario, ScenarioError, ScenarioRun
from postmortem.scenarios.catalog import SCENARIO_LIST
from postmortem.scenarios.tf2 import TF2_SCENARIOS

SCENARIOS: dict[str, Scenario] = {s.name: s for s in [*SCENARIO_LIST, *TF2_SCENARIOS]}


def get_scenario(name: str) -> Scenario:
    try:
        return SCENARIOS[name]
    except KeyError:
        raise ScenarioError(
            f"unknown scenario {name!r}",
            help_text=f"Known scenarios: {', '.join(SCENARIOS)}.",
        ) from None


__all__ = ["SCENARIOS", "Scenario", "ScenarioError", "ScenarioRun", "get_scenario"]
