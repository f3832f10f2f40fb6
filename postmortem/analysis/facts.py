"""The building blocks every rule reads, computed once per dump.

Roles and the cluster map, thread views, the health of each cluster member, log
signatures, step and save cadence, checkpoint progress, and the wait-for graph.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, cast

import pandas as pd

from postmortem.analysis.model import Evidence
from postmortem.analysis.roles import (
    Member,
    build_cluster,
    host_of,
    is_local,
    port_of,
    role_from_device,
)
from postmortem.analysis.stacktree import StackClass, outliers, stack_classes
from postmortem.analysis.threads import ThreadView, thread_views
from postmortem.loading import Dump, as_int, records

OVERSIZED = re.compile(
    r"(Cannot encode a Tensor that exceeds the 2GB protobuf limit|exceeds the 2GB protobuf|"
    r"Failed to encode tensor to byte buffer|larger than 2GB|message of size \d+ exceeds|"
    r"Received message larger than max)",
    re.IGNORECASE,
)
EXCEEDED_BYTES = re.compile(r"Exceeded bytes: (\d+)")
RENDEZVOUS = re.compile(r"rendezvous_key: (/job:[^;]+);[^;]*;(/job:[^;]+);([^;]+);")
REMOTE_TARGET = re.compile(r"from remote target (/job:[\w-]+/replica:\d+/task:\d+)")
CREATE_SESSION_WAIT = re.compile(
    r"CreateSession still waiting for response from worker: (/job:[\w-]+/replica:\d+/task:\d+)"
)
GRPC_UNREACHABLE = re.compile(
    r"(failed to connect to all addresses|Connection refused|UnavailableError|"
    r"Socket closed|Connection reset by peer|DNS resolution failed)",
    re.IGNORECASE,
)
SAVE_LINE = re.compile(
    r"(Saving checkpoints? (for \d+ )?(in)?to|Saving checkpoint to path)", re.IGNORECASE
)
SAVE_TRACEBACK = re.compile(r'saver\.py", line \d+, in save\b')
STEP_LINE = re.compile(r"\b(?:global[_ ]step|step)\b\s*[:=#]?\s*(\d+)", re.IGNORECASE)
GIB_2 = 2**31


@dataclass
class MemberHealth:
    member: Member
    problems: list[str] = field(default_factory=list)  # why it cannot answer, in words
    evidence_source: str = ""

    @property
    def unresponsive(self) -> bool:
        return bool(self.problems)

    def evidence(self) -> list[Evidence]:
        """Each problem as evidence; absent members are known from the cluster map only."""
        role = self.member.role
        return [
            Evidence(f"{role}: {p}", self.evidence_source or "cluster map", role)
            for p in self.problems
        ]


@dataclass
class LogFacts:
    role: str
    pid: int | None
    lines: list[str]
    save_lines: list[int]  # line numbers
    step_values: list[tuple[int, int]]  # (line number, step)
    oversized: list[str]
    create_session_waits: list[str]  # the device strings waited for
    grpc_errors: list[str]
    # Remote tasks named by gRPC errors that say they could not be reached, with counts.
    unreachable_targets: dict[str, int] = field(default_factory=dict)
    failed_saves: int = 0  # tracebacks through Saver.save

    @property
    def last_step(self) -> int | None:
        return self.step_values[-1][1] if self.step_values else None

    @property
    def saves_after_last_step(self) -> int:
        last_step_line = self.step_values[-1][0] if self.step_values else -1
        return sum(1 for n in self.save_lines if n > last_step_line)


class Facts:
    def __init__(self, dump: Dump) -> None:
        self.dump = dump
        self.host = dump.host
        self.labels, self.members = build_cluster(dump.processes, dump.sockets, dump.host)
        self.pid_by_role = {label: pid for pid, label in self.labels.items()}
        self.rounds = len(dump.rounds)

    def role(self, pid: int | None) -> str:
        return self.labels.get(int(pid), f"pid:{pid}") if pid is not None else "?"

    def member(self, role: str) -> Member | None:
        return self._member_by_role.get(role)

    @cached_property
    def _member_by_role(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        for m in self.members:
            out.setdefault(m.role, m)
        return out

    @cached_property
    def threads(self) -> list[ThreadView]:
        d = self.dump
        return thread_views(d.threads, d.frames, d.py_threads, d.process_rounds)

    @cached_property
    def stack_classes(self) -> list[StackClass]:
        return stack_classes(self.threads)

    @cached_property
    def outliers(self) -> list[tuple[str, str]]:
        return outliers(self.threads, self.labels)

    @cached_property
    def wait_for_sinks(self) -> list[str]:
        """Members that others wait on and that wait on nobody: where a hang bottoms out."""
        waiting = {a for a, _, _ in self.wait_for}
        return sorted({b for _, b, _ in self.wait_for if b not in waiting})

    def threads_of(self, pid: int) -> list[ThreadView]:
        return list(self._threads_by_pid.get(pid, ()))

    @cached_property
    def _threads_by_pid(self) -> dict[int, list[ThreadView]]:
        out: dict[int, list[ThreadView]] = {}
        for t in self.threads:
            out.setdefault(t.pid, []).append(t)
        return out

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
    def exited_pids(self) -> set[int]:
        out = self.dump.outcomes
        if out.empty:
            return set()
        gone = out[
            (out["status"] == "failed")
            & out["reason"].fillna("").str.contains("exited", case=False)
        ]
        return {int(t) for t in gone["target"] if str(t).isdigit()}

    @cached_property
    def tf_unanswered(self) -> dict[str, str]:
        """address -> reason, for profiler probes that got no answer."""
        servers = self.dump.tf_servers
        if servers.empty:
            return {}
        bad = servers[(servers["status"] == "failed") & ~servers["answered"]]
        return {str(r["address"]): str(r["reason"]) for r in records(bad)}

    @cached_property
    def listening_everywhere(self) -> set[int] | None:
        """Ports listening anywhere in the captured network namespace, when recorded."""
        pr = self.dump.process_rounds
        if "host_listening" not in pr.columns or pr.empty:
            return None
        addresses: set[str] = set()
        recorded = False
        for value in pr["host_listening"]:
            if isinstance(value, list):
                recorded = True
                addresses.update(map(str, value))
        ports = {p for p in map(port_of, addresses) if p is not None}
        return ports if recorded else None

    @cached_property
    def health(self) -> dict[str, MemberHealth]:
        health: dict[str, MemberHealth] = {}
        sockets = self.dump.sockets
        for m in self.members:
            h = MemberHealth(m)
            if m.pid is None:
                port = port_of(m.address) if m.address else None
                listening = self.listening_everywhere
                # Whether anything listens at its address is known only for this host.
                seen = (
                    listening is not None
                    and port is not None
                    and bool(m.address)
                    and is_local(m.address or "", self.host)
                )
                if seen and port not in (listening or set()):
                    h.problems.append(f"not running: nothing listens on {m.address}")
                elif seen:
                    pass  # alive but not captured: nothing says it is unresponsive
                elif m.address and m.address in self.tf_unanswered:
                    h.problems.append(
                        f"its profiler did not answer ({self.tf_unanswered[m.address]})"
                    )
                elif (
                    not self.dump.sockets.empty
                    and self._peer_connections(m.address) == 0
                    and self._any_waiting_on_cluster()
                ):
                    h.problems.append(
                        f"not in the dump and no captured process holds a "
                        f"connection to {m.address}: likely dead"
                    )
                health[m.role] = h
                continue
            states = self.process_states.get(m.pid, "")
            source = f"processes/{m.pid}/round-*/procfs.json"
            h.evidence_source = source
            if m.pid in self.exited_pids:
                h.problems.append("exited during the capture")
            if states and set(states) <= {"T", "t"}:
                h.problems.append(
                    f"stopped (state T in all {len(states)} rounds: SIGSTOP or a debugger)"
                )
            elif states and set(states) <= {"Z", "X"}:
                h.problems.append("zombie: the process has exited")
            threads = self.threads_of(m.pid)
            if threads and all(t.states and set(t.states) <= {"D"} for t in threads):
                h.problems.append("every thread in uninterruptible I/O (state D)")
            if m.address and m.address in self.tf_unanswered:
                h.problems.append(
                    f"its profiler service did not answer: {self.tf_unanswered[m.address]}"
                )
            if not sockets.empty and m.address:
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
            health[m.role] = h
        return health

    @cached_property
    def _listen_backlogs(self) -> dict[tuple[int, int], list[float]]:
        """(pid, listening port) -> the largest accept backlog of each round, by round."""
        s = self.dump.sockets
        if s.empty:
            return {}
        lis = s[s["tcp_state"] == "LISTEN"]
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
        """port -> how many ESTABLISHED socket rows (all rounds) have it as remote port."""
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
        return self._established_remote_ports.get(port, 0) if port is not None else 0

    def _any_waiting_on_cluster(self) -> bool:
        return any(
            t.status == "stuck" and t.waits_on in ("session-run", "session-create")
            for t in self.threads
        )

    @cached_property
    def logs(self) -> dict[str, LogFacts]:
        out: dict[str, LogFacts] = {}
        lines_df = self.dump.log_lines
        if lines_df.empty:
            return out
        ordered = lines_df.sort_values(["stream", "line_no"], kind="stable")
        for pid, grp in ordered.groupby("pid", dropna=False):
            pid_int = None if pd.isna(pid) else as_int(pid)
            role = self.role(pid_int) if pid_int is not None else "log"
            texts = [str(t) for t in grp["text"].tolist()]
            facts = LogFacts(role, pid_int, texts, [], [], [], [], [])
            for number, text in enumerate(texts):
                if SAVE_LINE.search(text):
                    facts.save_lines.append(number)
                elif (match := STEP_LINE.search(text)) and "Saving" not in text:
                    facts.step_values.append((number, int(match.group(1))))
                if OVERSIZED.search(text):
                    facts.oversized.append(text)
                if match := CREATE_SESSION_WAIT.search(text):
                    facts.create_session_waits.append(match.group(1))
                if GRPC_UNREACHABLE.search(text):
                    facts.grpc_errors.append(text)
                # TF prints the remote task and the gRPC status on neighbouring lines.
                nearby = texts[max(0, number - 2) : number + 3]
                if (match := REMOTE_TARGET.search(text)) and any(
                    GRPC_UNREACHABLE.search(near) for near in nearby
                ):
                    device = match.group(1)
                    facts.unreachable_targets[device] = facts.unreachable_targets.get(device, 0) + 1
                if SAVE_TRACEBACK.search(text):
                    facts.failed_saves += 1
            out[role if pid_int is not None else f"log:{len(out)}"] = facts
        return out

    @cached_property
    def log_growth(self) -> dict[int, list[int]]:
        """pid -> size of its stderr/stdout log file per round (from its open fds 1, 2)."""
        files = self.dump.files
        out: dict[int, list[int]] = {}
        if files.empty:
            return out
        logs = files[files["fd"].isin([1, 2]) & files["size"].notna()]
        for pid, grp in logs.groupby("pid"):
            per_round = grp.groupby("round")["size"].sum().sort_index()
            out[as_int(pid)] = [int(v) for v in per_round]
        return out

    @cached_property
    def checkpoint_progress(self) -> dict[str, dict[str, object]]:
        """dir -> {sizes per round, growing, timed_out, temp files, last checkpoint}."""
        out: dict[str, dict[str, object]] = {}
        cr = self.dump.checkpoint_rounds
        cf = self.dump.checkpoint_files
        if cr.empty:
            return out
        for directory, grp in cr.sort_values("round").groupby("dir"):
            sizes = [int(v) for v in grp["total_bytes"]]
            files = cf[cf["dir"] == directory] if not cf.empty else cf
            temp = (
                files[files["name"].str.contains(r"_temp|\.tempstate|tmp", regex=True)]
                if not files.empty
                else files
            )
            temp_sizes = (
                [int(v) for v in temp.groupby("round")["size"].sum().sort_index()]
                if not temp.empty
                else []
            )
            state = next((s for s in reversed(list(grp["state_file"])) if s), "")
            out[str(directory)] = {
                "sizes": sizes,
                "growing": len(sizes) > 1 and sizes[-1] > sizes[0],
                "temp_sizes": temp_sizes,
                "temp_growing": len(temp_sizes) > 1 and temp_sizes[-1] > temp_sizes[0],
                "timed_out": bool(grp["listing_timed_out"].any()),
                "last_checkpoint": _last_checkpoint(state),
                "times": [float(t or 0) for t in grp["time"]],
            }
        return out

    @cached_property
    def write_rates(self) -> dict[int, float]:
        """pid -> bytes/s of write_bytes (or wchar) across the capture."""
        pr = self.dump.process_rounds
        out: dict[int, float] = {}
        if pr.empty:
            return out
        ordered = pr.sort_values(["pid", "round"], kind="stable")
        series: dict[int, list[tuple[float, float, float]]] = {}
        columns = [ordered[c].tolist() for c in ("pid", "time", "wchar", "write_bytes")]
        for pid, time, wchar, written in zip(*columns, strict=True):
            series.setdefault(int(pid), []).append((time, wchar, written))
        for pid, rows in series.items():
            if len(rows) < 2:
                continue
            column = 1 if all(pd.notna(r[1]) for r in rows) else 2
            if any(pd.isna(r[column]) for r in rows):
                continue
            span = float(rows[-1][0] - rows[0][0]) or 1.0
            out[pid] = float(rows[-1][column] - rows[0][column]) / span
        return out

    def connected_members(self, pid: int) -> list[str]:
        """Roles of cluster members this process holds TCP connections to."""
        remotes = self._remotes_by_pid.get(pid)
        if not remotes:
            return []
        found: set[int] = set()
        for host, port in remotes:
            for index, m in self._members_by_port.get(port, ()):
                if m.pid != pid and host in _host_aliases(host_of(str(m.address))):
                    found.add(index)
        return [self.members[i].role for i in sorted(found)]

    @cached_property
    def _remotes_by_pid(self) -> dict[int, set[tuple[str, int]]]:
        """pid -> (host, port) of the remote end of each of its non-LISTEN sockets."""
        s = self.dump.sockets
        if s.empty:
            return {}
        pairs = s.loc[s["tcp_state"] != "LISTEN", ["pid", "remote"]].drop_duplicates()
        parsed = {r: (host_of(r), port_of(r)) for r in map(str, pairs["remote"].unique())}
        out: dict[int, set[tuple[str, int]]] = {}
        for pid, remote in zip(pairs["pid"].tolist(), pairs["remote"].tolist(), strict=True):
            host, port = parsed[str(remote)]
            if port is not None:
                out.setdefault(int(pid), set()).add((host, port))
        return out

    @cached_property
    def _members_by_port(self) -> dict[int, list[tuple[int, Member]]]:
        out: dict[int, list[tuple[int, Member]]] = {}
        for index, m in enumerate(self.members):
            port = port_of(m.address) if m.address else None
            if port is not None:
                out.setdefault(port, []).append((index, m))
        return out

    @cached_property
    def wait_for(self) -> list[tuple[str, str, str]]:
        """Edges (waiter role, waited-for role, why) between processes.

        A process with a thread stuck in session.run waits on the cluster members it is
        connected to; with no socket evidence, on every ps (replica_device_setter puts the
        variables there) and on unresponsive members.
        """
        edges: list[tuple[str, str, str]] = []
        unresponsive = [r for r, h in self.health.items() if h.unresponsive]
        for pid, role in self.labels.items():
            stuck = [
                t
                for t in self.threads_of(pid)
                if t.status == "stuck" and t.waits_on in ("session-run", "session-create")
            ]
            if not stuck:
                continue
            why = "session.run in " + stuck[0].label
            targets = set(self.connected_members(pid))
            targets |= {r for r in unresponsive if r != role}
            if not targets:
                targets = {m.role for m in self.members if m.job == "ps"}
            edges.extend((role, target, why) for target in sorted(targets) if target != role)
        return edges

    def oversized_details(self) -> dict[str, object]:
        details: dict[str, object] = {}
        for facts in self.logs.values():
            for text in facts.oversized:
                if m := RENDEZVOUS.search(text):
                    details.setdefault("src_device", m.group(1))
                    details.setdefault("dst_device", m.group(2))
                    edge = m.group(3)
                    variable = re.sub(r"^edge_\d+_", "", edge).split("/")[0]
                    details.setdefault("variable", variable)
                    details.setdefault("edge", edge)
                if m := EXCEEDED_BYTES.search(text):
                    details.setdefault("exceeded_bytes", int(m.group(1)))
                if m := REMOTE_TARGET.search(text):
                    details.setdefault("remote_target", m.group(1))
                details.setdefault("reported_by", facts.role)
                details.setdefault("line", text.strip()[:400])
        src = details.get("src_device") or details.get("remote_target")
        if isinstance(src, str):
            details["src_role"] = role_from_device(src)
        return details


def _ports(addresses: pd.Series) -> pd.Series:
    """port_of over a column, parsing each distinct address once."""
    parsed = {a: port_of(str(a)) for a in addresses.unique()}
    return addresses.map(parsed)


def _host_aliases(host: str) -> set[str]:
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return {"127.0.0.1", "::1", "localhost", "0.0.0.0"}
    return {host}


def _last_checkpoint(state: str) -> str:
    match = re.search(r'^model_checkpoint_path:\s*"(.*)"', state or "", re.MULTILINE)
    return match.group(1) if match else ""
