"""How the job distributes its work, from what the dump shows: a TF2 strategy's own code
and threads on the stacks, its log lines, or a tf.compat.v1 session and cluster flags."""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.loading import records
from postmortem.model import Strategy

MWMS_FILES = ("collective_all_reduce_strategy.py",)
MWMS_FUNCTIONS = ("CollectiveAllReduce",)
PSS_FILES = ("cluster_coordinator.py", "parameter_server_strategy_v2.py")
PSS_THREADS = ("WorkerPreemptionHandler", "WorkerClosureProcessingLoop")
V1_FILES = ("client/session.py", "monitored_session.py", "supervisor.py")
V1_FLAGS = ("--ps_hosts", "--worker_hosts", "--job_name")  # the classic cluster flags
LOG_MARKS = (
    ("MultiWorkerMirroredStrategy with cluster_spec", Strategy.MWMS),
    ("ParameterServerStrategyV2 is now connecting to cluster", Strategy.PSS),
)


def detect(facts: Facts) -> tuple[Strategy, str]:
    """The strategy and the evidence it rests on, in words; UNKNOWN when nothing shows."""
    for t in facts.threads:
        if t.name.startswith(PSS_THREADS):
            return Strategy.PSS, f"{t.role} runs the ClusterCoordinator's thread {t.name}"
        for frame in t.stack:
            if frame.filename.endswith(PSS_FILES):
                return Strategy.PSS, f"{t.label} of {t.role} is in {frame.label}"
            if frame.filename.endswith(MWMS_FILES) or frame.function.startswith(MWMS_FUNCTIONS):
                return Strategy.MWMS, f"{t.label} of {t.role} is in {frame.label}"
    for log in facts.logs.values():
        for line in log.lines:
            for mark, strategy in LOG_MARKS:
                if mark in line:
                    whose = f"{log.role}'s log" if log.role in facts.pid_by_role else log.source
                    return strategy, f"{whose}: {line.strip()[:160]}"
    for t in facts.threads:
        for frame in t.stack:
            if frame.filename.endswith(V1_FILES):
                return Strategy.V1, f"{t.label} of {t.role} is in {frame.label}"
    for row in records(facts.dump.processes):
        flags = [str(a).split("=", 1)[0] for a in row["args"]]
        if any(f in V1_FLAGS for f in flags):
            pid = int(row["pid"])
            return Strategy.V1, f"{facts.role(pid)} was started with the cluster flags"
    return Strategy.UNKNOWN, ""
