"""Who is who: ps / worker / chief and task index of every process, and the cluster map.

Inputs, strongest first: the classic flags (--job_name, --task_index, --ps_hosts,
--worker_hosts), TF_CONFIG, and listening ports matched against cluster addresses.
Members the cluster lists but the dump does not hold are kept: a dead ps is often the
culprit and is, by being dead, absent.
"""

from __future__ import annotations

import functools
import json
from typing import Any

import pandas as pd

from postmortem.loading import records
from postmortem.model import Member

JOB_FLAGS = {
    "ps": ("ps_hosts",),
    "worker": ("worker_hosts",),
    "chief": ("chief_hosts",),
    "evaluator": ("evaluator_hosts",),
}
LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]")


def flag(args: list[str], name: str) -> str | None:
    """Value of --name=value or --name value (also -name), last one wins as argparse does."""
    value = None
    for i, arg in enumerate(args):
        for prefix in (f"--{name}", f"-{name}"):
            if arg == prefix and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(prefix + "="):
                value = arg.split("=", 1)[1]
    return value


def _tf_config(env: dict[str, str]) -> dict[str, Any]:
    try:
        config = json.loads(env.get("TF_CONFIG", "") or "{}")
    except json.JSONDecodeError:
        return {}
    return config if isinstance(config, dict) else {}


def cluster_spec(args: list[str], env: dict[str, str]) -> dict[str, list[str]]:
    spec: dict[str, list[str]] = {}
    for job, flags in JOB_FLAGS.items():
        for name in flags:
            value = flag(args, name)
            if value:
                spec[job] = list(_hosts(value))
    cluster = _tf_config(env).get("cluster")
    if isinstance(cluster, dict):
        for job, addresses in cluster.items():
            if isinstance(addresses, list) and job not in spec:
                spec[str(job)] = [str(a) for a in addresses]
    return spec


@functools.lru_cache(maxsize=64)
def _hosts(value: str) -> tuple[str, ...]:
    """A --*_hosts list: every process of a big job repeats the same one."""
    return tuple(a.strip() for a in value.split(",") if a.strip())


def own_task(args: list[str], env: dict[str, str]) -> tuple[str | None, int | None]:
    job = flag(args, "job_name") or flag(args, "job")
    task = flag(args, "task_index") or flag(args, "task")
    if job is None:
        t = _tf_config(env).get("task")
        if isinstance(t, dict):
            job = t.get("type")
            task = t.get("index", task)
    try:
        return job, int(task) if task is not None else (0 if job else None)
    except (TypeError, ValueError):
        return job, None


def port_of(address: str) -> int | None:
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def build_cluster(
    processes: pd.DataFrame, sockets: pd.DataFrame, capture_host: str
) -> tuple[dict[int, str], list[Member]]:
    """(pid -> role label, every cluster member). Unknown processes get 'pid:PID'."""
    spec: dict[str, list[str]] = {}
    tasks: dict[int, tuple[str | None, int | None]] = {}
    for row in records(processes):
        args = list(row["args"])
        env = dict(row["env"])
        for job, addresses in cluster_spec(args, env).items():
            if len(addresses) > len(spec.get(job, [])):
                spec[job] = addresses
        tasks[int(row["pid"])] = own_task(args, env)

    listening: dict[int, set[int]] = {}
    if not sockets.empty:
        for row in records(sockets[sockets["tcp_state"] == "LISTEN"]):
            port = port_of(str(row["local"]))
            if port is not None:
                listening.setdefault(int(row["pid"]), set()).add(port)

    labels: dict[int, str] = {}
    for pid, (own_job, own_index) in tasks.items():
        if own_job is not None and own_index is not None:
            labels[pid] = f"{own_job}:{own_index}"
    # No flags: match a listening port against a cluster address on this host.
    for pid in tasks:
        if pid in labels:
            continue
        for job, addresses in spec.items():
            for index, address in enumerate(addresses):
                if port_of(address) in listening.get(pid, set()) and is_local(
                    address, capture_host
                ):
                    labels[pid] = f"{job}:{index}"
    for pid in tasks:
        labels.setdefault(pid, f"pid:{pid}")

    by_role = {label: pid for pid, label in labels.items()}
    members = []
    for job, addresses in spec.items():
        for index, address in enumerate(addresses):
            role = f"{job}:{index}"
            member_pid = by_role.get(role)
            # An absent member lives where the cluster spec says; loopback means this host.
            host = (
                capture_host
                if member_pid is not None or is_local(address, capture_host)
                else (host_of(address))
            )
            members.append(Member(role, job, index, address, member_pid, host))
    named = {m.role for m in members}
    for pid, label in labels.items():
        if label not in named:
            label_job, _, label_task = label.partition(":")
            task_index = int(label_task) if label_task.isdigit() else 0
            members.append(Member(label, label_job, task_index, None, pid, capture_host))
    members.sort(key=lambda m: (_job_order(m.job), m.task))
    return labels, members


def _job_order(job: str) -> int:
    return {"chief": 0, "ps": 1, "worker": 2}.get(job, 3)


def is_local(address: str, capture_host: str) -> bool:
    host = host_of(address)
    return host in LOCAL_HOSTS or host == capture_host or host.split(".")[0] == capture_host


def task_device(role: str) -> str:
    job, _, task = role.partition(":")
    return f"/job:{job}/replica:0/task:{task}"


def role_from_device(device: str) -> str | None:
    """'/job:ps/replica:0/task:1/device:CPU:0' -> 'ps:1'."""
    parts = dict(p.split(":", 1) for p in device.strip("/").split("/") if ":" in p)
    if "job" in parts:
        return f"{parts['job']}:{parts.get('task', '0')}"
    return None
