"""The cluster a TF process belongs to, from its command line and environment: the classic
flags (--ps_hosts, --worker_hosts, --job_name, --task_index) and TF_CONFIG. Standard
library only: the capture side reads it to follow a cluster across hosts, the analysis to
name every member."""

from __future__ import annotations

import functools
import json
from typing import Any

JOB_FLAGS = {
    "ps": ("ps_hosts",),
    "worker": ("worker_hosts",),
    "chief": ("chief_hosts",),
    "evaluator": ("evaluator_hosts",),
}


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


def tf_config(env: dict[str, str]) -> dict[str, Any]:
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
                spec[job] = list(hosts(value))
    cluster = tf_config(env).get("cluster")
    if isinstance(cluster, dict):
        for job, addresses in cluster.items():
            if isinstance(addresses, list) and job not in spec:
                spec[str(job)] = [str(a) for a in addresses]
    return spec


@functools.lru_cache(maxsize=64)
def hosts(value: str) -> tuple[str, ...]:
    """A --*_hosts list: every process of a big job repeats the same one."""
    return tuple(a.strip() for a in value.split(",") if a.strip())


def host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def port_of(address: str) -> int | None:
    try:
        return int(address.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None
