"""Who is who: ps / worker / chief and task index of every process, and the cluster map.

Inputs, strongest first: the classic flags (--job_name, --task_index, --ps_hosts,
--worker_hosts), TF_CONFIG, and listening ports matched against cluster addresses.
Members the cluster lists but the dump does not hold are kept: a dead ps is often the
culprit and is, by being dead, absent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from collectors.clusterspec import JOB_FLAGS, cluster_spec, flag, host_of, port_of, tf_config
from postmortem.loading import records
from postmortem.model import Member, os_pid

__all__ = ["JOB_FLAGS", "build_cluster", "cluster_spec", "flag", "host_of", "port_of"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "0.0.0.0", "::1", "[::1]")


def own_task(args: list[str], env: dict[str, str]) -> tuple[str | None, int | None]:
    job = flag(args, "job_name") or flag(args, "job")
    task = flag(args, "task_index") or flag(args, "task")
    if job is None:
        t = tf_config(env).get("task")
        if isinstance(t, dict):
            job = t.get("type")
            task = t.get("index", task)
    try:
        return job, int(task) if task is not None else (0 if job else None)
    except (TypeError, ValueError):
        return job, None


@dataclass(frozen=True)
class Hosts:
    """The hosts of a dump: each one's names and addresses, and the ones that were not
    captured with why. A single-host dump has one, the capture's host."""

    aliases: dict[str, frozenset[str]]
    not_captured: dict[str, str]  # host (as named) -> why it was not captured
    # hosts reached that had no process to capture (--discover found none) -> what it said
    empty: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, manifest: dict[str, Any]) -> Hosts:
        capture_host = str(manifest.get("host", ""))
        entries = manifest.get("hosts")
        if not manifest.get("multi_host") or not isinstance(entries, list):
            return cls({capture_host: frozenset({capture_host})}, {})
        aliases: dict[str, frozenset[str]] = {}
        failed: dict[str, str] = {}
        empty: dict[str, str] = {}
        for entry in entries:
            if not isinstance(entry, dict):
                continue
            name = str(entry.get("name", ""))
            address = str(entry.get("address", ""))
            names = {name, host_of(address.rpartition("@")[2]), str(entry.get("hostname", ""))}
            names.update(str(a) for a in entry.get("addresses") or [] if isinstance(a, str))
            if entry.get("address") == "local":
                names.add(capture_host)
            names.discard("")
            names.discard("127.0.0.1")  # every host has it: it names none of them
            if entry.get("status") == "ok":
                aliases[name] = frozenset(names)
            elif entry.get("status") == "empty":
                aliases[name] = frozenset(names)
                empty[name] = str(entry.get("reason", "")) or "no process to capture"
            else:
                failed[name] = str(entry.get("reason", "")) or "not captured"
                aliases.setdefault(name, frozenset(names))
        return cls(aliases, failed, empty)

    def host_of_address(self, address: str) -> str | None:
        """The host an address lives on, by its host part (None: no host of the dump)."""
        host = host_of(address)
        for name, names in self.aliases.items():
            if host in names or host.split(".")[0] in names:
                return name
        return None

    def on(self, address: str, host: str) -> bool:
        """Whether a cluster address is on this host (loopback: on the process's own)."""
        return host_of(address) in LOCAL_HOSTS or self.host_of_address(address) == host


def build_cluster(
    processes: pd.DataFrame,
    sockets: pd.DataFrame,
    capture_host: str,
    hosts: Hosts | None = None,
) -> tuple[dict[int, str], list[Member]]:
    """(pid -> role label, every cluster member). Unknown processes get 'pid:PID'."""
    hosts = hosts or Hosts({capture_host: frozenset({capture_host})}, {})
    spec: dict[str, list[str]] = {}
    tasks: dict[int, tuple[str | None, int | None]] = {}
    where: dict[int, str] = {}
    for row in records(processes):
        args = list(row["args"])
        env = dict(row["env"])
        for job, addresses in cluster_spec(args, env).items():
            if len(addresses) > len(spec.get(job, [])):
                spec[job] = addresses
        tasks[int(row["pid"])] = own_task(args, env)
        where[int(row["pid"])] = str(row.get("host") or capture_host)

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
    # No flags: match a listening port against a cluster address on the process's host.
    for pid in tasks:
        if pid in labels:
            continue
        for job, addresses in spec.items():
            for index, address in enumerate(addresses):
                if port_of(address) not in listening.get(pid, set()):
                    continue
                here = (
                    hosts.on(address, where[pid])
                    if len(hosts.aliases) > 1  # every host may listen on the same port
                    else is_local(address, capture_host)
                )
                if here and f"{job}:{index}" not in labels.values():
                    labels[pid] = f"{job}:{index}"
    for pid in tasks:
        # a process with no role: its pid (on its host, when the dump has several)
        labels.setdefault(
            pid,
            f"pid:{os_pid(pid)}@{where[pid]}" if len(hosts.aliases) > 1 else f"pid:{pid}",
        )

    by_role = {label: pid for pid, label in labels.items()}
    members = []
    for job, addresses in spec.items():
        for index, address in enumerate(addresses):
            role = f"{job}:{index}"
            member_pid = by_role.get(role)
            if member_pid is not None:
                host = where.get(member_pid, capture_host)
            elif len(hosts.aliases) > 1:
                host = hosts.host_of_address(address) or host_of(address)
            else:  # an absent member lives where the cluster spec says; loopback: here
                host = capture_host if is_local(address, capture_host) else host_of(address)
            not_captured = hosts.not_captured.get(host, "") if member_pid is None else ""
            members.append(
                Member(role, job, index, address, member_pid, host, not_captured=not_captured)
            )
    named = {m.role for m in members}
    for pid, label in labels.items():
        if label not in named:
            label_job, _, label_task = label.partition(":")
            task_index = int(label_task) if label_task.isdigit() else 0
            members.append(
                Member(label, label_job, task_index, None, pid, where.get(pid, capture_host))
            )
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
