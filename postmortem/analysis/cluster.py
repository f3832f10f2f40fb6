"""The cluster as a whole: which member cannot answer, who is connected to whom, who waits
on whom.

Health comes from the process table (stopped, exited, every thread in D), the sockets
(an accept backlog that never drains, CLOSE_WAIT connections with unread bytes), the TF
profiler (a server that did not answer) and, for members absent from the dump, whether
anything listens at their address. The wait-for graph joins a process stuck in
session.run to the members it holds connections to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import pandas as pd

from postmortem.analysis.roles import Hosts, host_of, port_of
from postmortem.loading import Dump, as_int
from postmortem.model import Member, Status, Thread, WaitEdge, Waiter, WaitKind

CLUSTER_WAITS = (WaitKind.SESSION_RUN, WaitKind.SESSION_CREATE)
# A stuck TF2 op waits on the cluster too (wait-for edges), but a long tf.function call
# never wakes either: it alone does not make an uncaptured member look dead.
EDGE_WAITS = (*CLUSTER_WAITS, WaitKind.TF_OP)
COLLECTIVE_JOBS = ("chief", "worker")  # who joins a MultiWorkerMirroredStrategy collective


@dataclass
class Health:
    """Why a member cannot answer, in words, and the dump file that shows it."""

    member: Member
    problems: list[str] = field(default_factory=list)
    source: str = ""

    @property
    def unresponsive(self) -> bool:
        return bool(self.problems)


class Cluster:
    def __init__(
        self,
        dump: Dump,
        members: list[Member],
        threads: list[Thread],
        grouped: set[int],
        exited: set[int],
        unanswered: dict[str, str],
        procfs_source: dict[int, str],
        spec_source: str,
    ) -> None:
        self.dump = dump
        self.host = dump.host
        self.hosts = Hosts.of(dump.manifest)
        # hosts whose processes the dump holds (a dump of several hosts: the ones captured)
        loaded = dump.manifest.get("hosts_loaded")
        self.captured_hosts = set(loaded) if isinstance(loaded, list) else {dump.host}
        self.members = members
        self.threads = threads
        self.grouped = grouped  # pids with parked or stopped threads kept as groups
        self.exited = exited
        self.unanswered = unanswered  # TF server address -> why it did not answer
        self.procfs_source = procfs_source  # pid -> its last procfs.json in the dump
        self.spec_source = spec_source  # a file that names the cluster (a process.json)
        self._threads_by_pid: dict[int, list[Thread]] = {}
        for t in threads:
            self._threads_by_pid.setdefault(t.pid, []).append(t)

    @cached_property
    def process_states(self) -> dict[int, str]:
        """pid -> kernel states per round ('TTT'); '' when no round read it."""
        pr = self.dump.process_rounds
        out: dict[int, str] = {}
        if not pr.empty:
            for pid, grp in pr.sort_values("round").groupby("pid"):
                out[as_int(pid)] = "".join(str(s) for s in grp["state"])
        return out

    @cached_property
    def _listening_by_host(self) -> dict[str, set[int]]:
        """host -> ports listening anywhere in its network namespace, where recorded."""
        pr = self.dump.process_rounds
        if "host_listening" not in pr.columns or pr.empty:
            return {}
        procs = self.dump.processes
        where = (
            dict(zip(procs["pid"].tolist(), procs["host"].tolist(), strict=True))
            if "host" in procs.columns and not procs.empty
            else {}
        )
        out: dict[str, set[int]] = {}
        for pid, value in zip(pr["pid"].tolist(), pr["host_listening"].tolist(), strict=True):
            if isinstance(value, list):
                ports = out.setdefault(str(where.get(pid) or self.host), set())
                ports.update(p for p in map(port_of, map(str, value)) if p is not None)
        return out

    def listening_on(self, host: str) -> set[int] | None:
        """Ports listening anywhere on a captured host, when recorded; None otherwise."""
        return self._listening_by_host.get(host)

    @cached_property
    def health(self) -> dict[str, Health]:
        return {m.role: self._health(m) for m in self.members}

    def _health(self, m: Member) -> Health:
        h = Health(m)
        if m.pid is None:
            h.source = self.spec_source
            self._absent_health(m, h)
            return h
        h.source = self.procfs_source.get(m.pid, "manifest.json")
        states = self.process_states.get(m.pid, "")
        if m.pid in self.exited:
            h.problems.append("exited during the capture")
        if states and set(states) <= {"T", "t"}:
            h.problems.append(
                f"stopped (state T in all {len(states)} rounds: SIGSTOP or a debugger)"
            )
        elif states and set(states) <= {"Z", "X"}:
            h.problems.append("zombie: the process has exited")
        threads = self._threads_by_pid.get(m.pid, [])
        if (
            threads
            and m.pid not in self.grouped
            and all(t.states and set(t.states) <= {"D"} for t in threads)
        ):
            h.problems.append("every thread in uninterruptible I/O (state D)")
        if m.address and m.address in self.unanswered:
            h.problems.append(f"its profiler service did not answer: {self.unanswered[m.address]}")
        if not self.dump.sockets.empty and m.address:
            port = port_of(m.address)
            backlog = self._listen_backlogs.get((m.pid, port), []) if port is not None else []
            if backlog and all(v > 0 for v in backlog):
                h.problems.append(
                    f"{int(backlog[-1])} connection(s) waiting in its accept "
                    f"backlog on port {port}: it does not accept"
                )
            stale = self._stale_close_wait.get(m.pid)
            if stale is not None and h.problems:
                h.problems.append(f"{stale} CLOSE_WAIT connection(s) with unread bytes")
        return h

    def _absent_health(self, m: Member, h: Health) -> None:
        if m.not_captured:
            return  # its host was not captured: its absence says nothing
        if m.host in self.hosts.empty:
            h.problems.append(
                f"not running: its host {m.host} was reached and had no process to capture "
                f"({self.hosts.empty[m.host]})"
            )
            return
        if len(self.hosts.aliases) > 1 and m.host not in self.hosts.aliases:
            return  # a host no one asked to capture: nothing is known about it
        port = port_of(m.address) if m.address else None
        listening = self.listening_on(m.host) if m.host in self.captured_hosts else None
        # Whether anything listens at its address is known only for a captured host.
        seen = listening is not None and port is not None and bool(m.address)
        if seen and port not in (listening or set()):
            h.problems.append(f"not running: nothing listens on {m.address}")
        elif seen:
            pass  # alive but not captured: nothing says it is unresponsive
        elif m.address and m.address in self.unanswered:
            h.problems.append(f"its profiler did not answer ({self.unanswered[m.address]})")
            h.source = "manifest.json"
        elif (
            not self.dump.sockets.empty
            and self._peer_connections(m.address) == 0
            and self._any_waiting_on_cluster()
        ):
            h.problems.append(
                f"not in the dump and no captured process holds a "
                f"connection to {m.address}: likely dead"
            )

    @cached_property
    def _listen_backlogs(self) -> dict[tuple[int, int], list[float]]:
        """(pid, listening port) -> the largest accept backlog of each round, by round."""
        s = self.dump.sockets
        if s.empty:
            return {}
        lis = s[s["tcp_state"] == "LISTEN"]
        if "last_round" in lis.columns:  # a row stands for each round from round to last_round
            spans = (lis["last_round"] - lis["round"]).clip(lower=0).astype(int) + 1
            lis = lis.loc[lis.index.repeat(spans)]
            lis = lis.assign(round=lis["round"] + lis.groupby(level=0).cumcount())
        ports = _ports(lis["local"])
        per_round = lis.assign(port=ports).groupby(["pid", "port", "round"])["rx_queue"].max()
        out: dict[tuple[int, int], list[float]] = {}
        for key, value in cast("dict[tuple[Any, Any, Any], Any]", per_round.to_dict()).items():
            out.setdefault((as_int(key[0]), as_int(key[1])), []).append(value)
        return out

    @cached_property
    def _stale_close_wait(self) -> dict[int, int]:
        """pid -> how many fds hold CLOSE_WAIT connections with unread bytes."""
        s = self.dump.sockets
        if s.empty:
            return {}
        stale = s[(s["tcp_state"] == "CLOSE_WAIT") & (s["rx_queue"] > 0)]
        return {as_int(pid): int(n) for pid, n in stale.groupby("pid")["fd"].nunique().items()}

    @cached_property
    def _established_remote_ports(self) -> dict[int, int]:
        """port -> how many ESTABLISHED connections (a row each while alike) have it as
        remote port."""
        s = self.dump.sockets
        if s.empty:
            return {}
        established = s[s["tcp_state"] == "ESTABLISHED"]
        counts = _ports(established["remote"]).value_counts()
        return {as_int(port): int(n) for port, n in counts.items()}

    def _peer_connections(self, address: str | None) -> int:
        if not address or self.dump.sockets.empty:
            return 0
        port = port_of(address)
        if port is None:
            return 0
        if len(self.hosts.aliases) <= 1:
            return self._established_remote_ports.get(port, 0)
        aliases = self._aliases(host_of(address))  # several hosts may use the same port
        return sum(
            1
            for remotes in self._remotes_by_pid.values()
            for host, remote_port in remotes
            if remote_port == port and host in aliases
        )

    def _any_waiting_on_cluster(self) -> bool:
        return any(t.status is Status.STUCK and t.waits_on in CLUSTER_WAITS for t in self.threads)

    # -- connections and the wait-for graph -----------------------------------------------

    def _aliases(self, host: str) -> set[str]:
        """Every name and address of the host a cluster address names."""
        names = _host_aliases(host)
        owner = self.hosts.host_of_address(f"{host}:0") if len(self.hosts.aliases) > 1 else None
        if owner is not None:
            names |= set(self.hosts.aliases[owner])
        return names

    def connected_members(self, pid: int) -> list[str]:
        """Roles of cluster members this process holds TCP connections to."""
        remotes = self._remotes_of(pid)
        if not remotes:
            return []
        # Thousands of workers hold connections to the very same ps addresses: the members
        # at a set of addresses are found once, and only the process itself left out.
        key = frozenset(remotes)
        at = self._members_at_remotes.get(key)
        if at is None:
            found = {pair for remote in remotes for pair in self._members_at(remote)}
            at = self._members_at_remotes[key] = sorted(found, key=lambda pair: pair[0])
        return [self.members[index].role for index, member_pid in at if member_pid != pid]

    @cached_property
    def _members_at_remotes(self) -> dict[frozenset[tuple[str, int]], list[tuple[int, Any]]]:
        return {}

    def _members_at(self, remote: tuple[str, int]) -> list[tuple[int, int | None]]:
        """(index, pid) of the members a remote end (host, port) is: thousands of workers
        hold connections to the same ps addresses, so each is matched once."""
        found = self._member_matches.get(remote)
        if found is None:
            host, port = remote
            found = self._member_matches[remote] = [
                (index, m.pid)
                for index, m in self._members_by_port.get(port, ())
                if host in self._aliases(host_of(str(m.address)))
            ]
        return found

    @cached_property
    def _member_matches(self) -> dict[tuple[str, int], list[tuple[int, int | None]]]:
        return {}

    @cached_property
    def _remotes_by_pid(self) -> dict[int, set[tuple[str, int]]]:
        """pid -> (host, port) of the remote end of each of its non-LISTEN sockets."""
        pids = self._connections[0]
        return {pid: found for pid in pids if (found := self._remotes_of(pid))}

    @cached_property
    def _connections(self) -> tuple[dict[int, Any], Any]:
        """The non-LISTEN sockets: pid -> their positions, and their remote addresses."""
        s = self.dump.sockets
        if s.empty:
            return {}, None
        connected = s.loc[s["tcp_state"] != "LISTEN", ["pid", "remote"]]
        pids = connected["pid"].to_numpy()
        rows = {as_int(pid): at for pid, at in connected.groupby(pids).indices.items()}
        return rows, connected["remote"].to_numpy(dtype=object)

    def _remotes_of(self, pid: int) -> set[tuple[str, int]]:
        """(host, port) of the remote end of each of a process's non-LISTEN sockets; each
        address is parsed once (a ps's address is every worker's remote end)."""
        by_pid, remotes = self._connections
        rows = by_pid.get(pid)
        if rows is None:
            return set()
        parsed = self._parsed_remotes
        out: set[tuple[str, int]] = set()
        for remote in set(remotes[rows].tolist()):
            found = parsed.get(remote)
            if found is None:
                text = str(remote)
                found = parsed[remote] = (host_of(text), port_of(text))
            if found[1] is not None:
                out.add(cast("tuple[str, int]", found))
        return out

    @cached_property
    def _parsed_remotes(self) -> dict[Any, tuple[str, int | None]]:
        return {}

    @cached_property
    def _members_by_port(self) -> dict[int, list[tuple[int, Member]]]:
        out: dict[int, list[tuple[int, Member]]] = {}
        for index, m in enumerate(self.members):
            port = port_of(m.address) if m.address else None
            if port is not None:
                out.setdefault(port, []).append((index, m))
        return out

    @cached_property
    def wait_for(self) -> list[WaitEdge]:
        """Edges (waiter, waited-for, why) between processes, waiters that wait on the very
        same members together.

        A process with a thread stuck in session.run waits on the cluster members it is
        connected to; with no socket evidence, on every ps (replica_device_setter puts the
        variables there) and on unresponsive members. A process stuck inside a collective
        (TF2 MultiWorkerMirroredStrategy) waits on the members of its collective group (the
        chief and workers) that are not inside one.
        """
        # (members, waiters): one after the other waiting on the very same members share
        # an entry, so the single edges keep the order they had one by one.
        entries: list[tuple[tuple[str, ...], list[Waiter]]] = []

        def add(waiter: Waiter, targets: tuple[str, ...]) -> None:
            if entries and (entries[-1][0] is targets or entries[-1][0] == targets):
                entries[-1][1].append(waiter)
            else:
                entries.append((targets, [waiter]))

        unresponsive = [r for r, h in self.health.items() if h.unresponsive]
        roles = {m.pid: m.role for m in self.members if m.pid is not None}
        for waiter, outside in self._collective_waits(roles):
            add(waiter, outside)
        every_ps: tuple[str, ...] | None = None
        ordered: dict[frozenset[str], tuple[str, ...]] = {}
        for pid, role in roles.items():
            stuck = [
                t
                for t in self._threads_by_pid.get(pid, [])
                if t.status is Status.STUCK and t.waits_on in EDGE_WAITS
            ]
            if not stuck:
                continue
            call = "a TF op" if stuck[0].waits_on is WaitKind.TF_OP else "session.run"
            why = f"{call} in {stuck[0].label}"
            found = set(self.connected_members(pid))
            found.update(r for r in unresponsive if r != role)
            if not found:
                if every_ps is None:
                    every_ps = tuple(sorted({m.role for m in self.members if m.job == "ps"}))
                found.update(every_ps)
            found.discard(role)
            if not found:
                continue
            # Thousands of workers wait on the same members: their set sorted once.
            key = frozenset(found)
            targets = ordered.get(key)
            if targets is None:
                targets = ordered[key] = tuple(sorted(key))
            add(Waiter(role, why), targets)
        return [WaitEdge(tuple(waiters), targets) for targets, waiters in entries]

    def in_collective(self, pid: int) -> list[Thread]:
        """Its threads inside a collective, the stuck ones first."""
        mine = [t for t in self._threads_by_pid.get(pid, []) if t.waits_on is WaitKind.COLLECTIVE]
        return sorted(mine, key=lambda t: t.status is not Status.STUCK)

    def _collective_waits(self, roles: dict[int, str]) -> list[tuple[Waiter, tuple[str, ...]]]:
        group = [m for m in self.members if m.job in COLLECTIVE_JOBS]
        waits: list[tuple[Waiter, tuple[str, ...]]] = []
        for pid, role in roles.items():
            stuck = [t for t in self.in_collective(pid) if t.status is Status.STUCK]
            if not stuck:
                continue
            outside = sorted(
                m.role
                for m in group
                if m.role != role and (m.pid is None or not self.in_collective(m.pid))
            )
            if outside:
                waits.append((Waiter(role, "a collective in " + stuck[0].label), tuple(outside)))
        return waits

    @cached_property
    def wait_for_sinks(self) -> list[str]:
        """Members that others wait on and that wait on nobody: where a hang bottoms out."""
        waiting = {w.role for e in self.wait_for for w in e.waiters}
        return sorted({t for e in self.wait_for for t in e.waits_on if t not in waiting})


def _ports(addresses: pd.Series) -> pd.Series:
    """port_of over a column, parsing each distinct address once."""
    parsed = {a: port_of(str(a)) for a in addresses.unique()}
    return addresses.map(parsed)


def _host_aliases(host: str) -> set[str]:
    """Loopback's many spellings; any other host is itself."""
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return {"127.0.0.1", "::1", "localhost", "0.0.0.0"}
    return {host}
