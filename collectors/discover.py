"""Find the TensorFlow ps and worker processes on this host, so nobody collects pids."""

from __future__ import annotations

import os

from collectors import procfs

ROLE_FLAGS = ("--job_name", "--ps_hosts", "--worker_hosts", "--task_index")


def _is_candidate(pid: int) -> bool:
    try:
        cmdline = procfs.read_cmdline(pid)
    except OSError:
        return False
    if not cmdline or not any("python" in os.path.basename(part) for part in cmdline[:2]):
        return False
    if any(arg.startswith(ROLE_FLAGS) for arg in cmdline):
        return True
    env, _ = procfs.read_env(pid)
    if "TF_CONFIG" in env:
        return True
    # A Python process with TensorFlow loaded that listens on a port runs a server.
    if not procfs.loads_tensorflow(pid):
        return False
    try:
        _, sockets = procfs.read_fds(pid, stat_files=False)
    except OSError:
        return False
    return bool(procfs.listening_ports(sockets))


def is_postmortem(cmdline: list[str]) -> bool:
    """A postmortem process: the CLI (`postmortem ...`, `python -m postmortem ...`) or a
    capture agent (`python3 -c <bootstrap>`)."""
    if any(os.path.basename(arg) == "postmortem" for arg in cmdline[:2]):
        return True
    if any(a == "-m" and b == "postmortem" for a, b in zip(cmdline, cmdline[1:], strict=False)):
        return True
    return any("from collectors.remote import main" in arg for arg in cmdline[:4])


def _ancestors() -> set[int]:
    """This process and the postmortem processes that started it (the CLI that runs a
    local capture agent): a capture run from a shell of the job's container inherits its
    TF_CONFIG and is no member of the job. A job process that starts a capture (the flight
    recorder's watchdog) is one, and stays a target."""
    found = {os.getpid()}
    pid = os.getpid()
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(procfs.parse_stat(
                (procfs.PROC / str(pid) / "stat").read_text(errors="replace"))["ppid"])
            if is_postmortem(procfs.read_cmdline(pid)):
                found.add(pid)
        except (OSError, ValueError, KeyError):
            break
    return found


def discover() -> list[int]:
    mine = _ancestors()
    found = []
    for entry in procfs.PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid in mine:
            continue
        if _is_candidate(pid):
            found.append(pid)
    return sorted(found)


def job_addresses(pid: int) -> set[str]:
    """Every address the process's cluster spec names (empty: it names none)."""
    from collectors import clusterspec

    try:
        args = procfs.read_cmdline(pid)
    except OSError:
        args = []
    env, _ = procfs.read_env(pid)
    spec = clusterspec.cluster_spec(args[1:], env)
    return {a for members in spec.values() for a in members}


def jobs(pids: list[int]) -> tuple[list[list[int]], list[int]]:
    """(the processes grouped by job, the ones that name no cluster). Two belong to one job
    when their cluster specs (--ps_hosts/--worker_hosts, TF_CONFIG) share an address."""
    addresses = {pid: job_addresses(pid) for pid in pids}
    groups: list[tuple[set[str], list[int]]] = []
    loose: list[int] = []
    for pid in pids:
        mine = addresses[pid]
        if not mine:
            loose.append(pid)
            continue
        joined = [g for g in groups if g[0] & mine]
        merged: tuple[set[str], list[int]] = (set(mine), [pid])
        for group in joined:
            merged[0].update(group[0])
            merged[1].extend(group[1])
            groups.remove(group)
        groups.append(merged)
    return [sorted(members) for _, members in groups], loose
