"""The thin front every rule reads: one object, each building block computed once.

The blocks live by domain: `roles` (who is who), `threads` and `stacktree` (what each
thread does), `cluster` (health, connections, wait-for), `logs` (TensorFlow's signatures,
saves, steps), `checkpoint` (is the save writing). Rules read `Facts` only, never the
loaded DataFrames; `sources` names the dump file each fact can be checked in.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import Any

import pandas as pd

from collectors import layout
from collectors.layout import FailureKind, StackSource
from postmortem.analysis import checkpoint as checkpoint_facts
from postmortem.analysis import flight as flight_facts
from postmortem.analysis import logs as log_facts
from postmortem.analysis import progress as progress_facts
from postmortem.analysis.cluster import Cluster, Health
from postmortem.analysis.logs import LogFacts
from postmortem.analysis.roles import Hosts, build_cluster
from postmortem.analysis.stacktree import main_threads, outliers, stack_classes
from postmortem.analysis.threads import ThreadViews, thread_views
from postmortem.loading import Dump, as_int, records
from postmortem.model import (
    CheckpointProgress,
    FlightRecord,
    LogProgress,
    Member,
    SaveCadence,
    StackClass,
    Thread,
    ThreadGroup,
    WaitEdge,
)


class DumpFiles:
    """Paths inside the dump that evidence cites: only files the loader really read. In a
    dump of several hosts, a process's files are under its host's directory, by its pid
    there."""

    def __init__(self, dump: Dump) -> None:
        self.present = dump.read_files
        self.origins = dump.origins
        keys = {origin: key for key, origin in dump.origins.items()}
        self._last_round: dict[int, int] = {}
        for name in dump.read_files:
            parts = name.split("/")
            prefix = ""
            if len(parts) == 6 and parts[0] == "hosts":
                prefix, parts = f"hosts/{parts[1]}/", parts[2:]
            if len(parts) == 4 and parts[0] == "processes" and parts[1].isdigit():
                index = layout.round_index(parts[2])
                if index is not None:
                    pid = keys.get((prefix, int(parts[1])), int(parts[1])) if prefix else int(
                        parts[1]
                    )
                    self._last_round[pid] = max(self._last_round.get(pid, -1), index)

    def _first(self, *candidates: str) -> str:
        """The first candidate the dump holds (as NAME, or gzipped as NAME.gz)."""
        for c in candidates:
            if c in self.present:
                return c
            if c + ".gz" in self.present:
                return c + ".gz"
        return layout.MANIFEST

    def _rounds(self, pid: int) -> range:
        return range(self._last_round.get(pid, -1), -1, -1)

    def _at(self, pid: int) -> tuple[str, int]:
        """(the directory its host's dump is in, its pid there)."""
        return self.origins.get(pid, ("", pid))

    def procfs(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(*(prefix + layout.procfs_file(real, r) for r in self._rounds(pid)))

    def pyspy(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(*(prefix + layout.pyspy_file(real, r) for r in self._rounds(pid)))

    def native(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(
            *(
                prefix + layout.native_file(real, r, source)
                for r in self._rounds(pid)
                for source in (StackSource.PYSTACK, StackSource.GDB)
            )
        )

    def stack(self, pid: int, python: bool = True) -> str:
        return self.pyspy(pid) if python else self.native(pid)

    def process(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(prefix + layout.process_file(real))

    def sources(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(
            prefix + layout.sources_file(real), prefix + layout.SHARED_SOURCES, self.pyspy(pid)
        )

    def std_stream(self, pid: int, stream: str) -> str:
        prefix, real = self._at(pid)
        return prefix + layout.std_stream_file(real, stream)

    def log(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(
            prefix + layout.std_stream_file(real, "stderr"),
            prefix + layout.std_stream_file(real, "stdout"),
        )

    def flight(self, pid: int) -> str:
        prefix, real = self._at(pid)
        return self._first(prefix + layout.flight_file(real))

    def checkpoint(self, index: int, prefix: str = "") -> str:
        start = prefix + layout.checkpoint_dir(index) + "/"
        names = sorted(n for n in self.present if n.startswith(start))
        return names[-1] if names else layout.MANIFEST


class Facts:
    def __init__(self, dump: Dump) -> None:
        self.dump = dump
        self.host = dump.host
        self.sources = DumpFiles(dump)
        members, self.labels = self._cluster_members(dump)
        self._members = members
        self.pid_by_role = {label: pid for pid, label in self.labels.items()}
        self.rounds = len(dump.rounds)

    @staticmethod
    def _cluster_members(dump: Dump) -> tuple[list[Member], dict[int, str]]:
        labels, members = build_cluster(
            dump.processes, dump.sockets, dump.host, Hosts.of(dump.manifest)
        )
        return members, labels

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
    def members(self) -> list[Member]:
        """Every member, with its problems (why it cannot answer) filled in."""
        health = self._cluster.health
        return [
            replace(
                m, problems=tuple(health[m.role].problems), problems_source=health[m.role].source
            )
            if m.role in health
            else m
            for m in self._members
        ]

    # -- threads and stacks ---------------------------------------------------------------

    @cached_property
    def _thread_views(self) -> ThreadViews:
        d = self.dump
        return thread_views(
            d.threads, d.frames, d.py_threads, d.process_rounds, self.labels, d.watch
        )

    @cached_property
    def threads(self) -> list[Thread]:
        """Every thread with a stack, and every stuck or busy one."""
        return self._thread_views.threads

    @cached_property
    def thread_groups(self) -> list[ThreadGroup]:
        """The other threads (parked or stopped, no stack), alike ones together."""
        return self._thread_views.groups

    def threads_of(self, pid: int) -> list[Thread]:
        return list(self._threads_by_pid.get(pid, ()))

    @cached_property
    def _threads_by_pid(self) -> dict[int, list[Thread]]:
        out: dict[int, list[Thread]] = {}
        for t in self.threads:
            out.setdefault(t.pid, []).append(t)
        return out

    @cached_property
    def main_threads(self) -> dict[int, Thread]:
        return main_threads(self.threads)

    @cached_property
    def stack_classes(self) -> list[StackClass]:
        return stack_classes(self.threads)

    @cached_property
    def outliers(self) -> list[tuple[str, str]]:
        return outliers(self.threads, self.labels)

    def source_lines(self, pid: int) -> dict[str, dict[str, str]]:
        """The source lines the capture kept above each frame: file -> line -> text."""
        return self.dump.sources.get(pid, {})

    # -- the cluster -------------------------------------------------------------------------

    @cached_property
    def _cluster(self) -> Cluster:
        return Cluster(
            self.dump,
            self._members,
            self.threads,
            {g.pid for g in self.thread_groups},
            self.exited_pids,
            self.tf_unanswered,
            {pid: self.sources.procfs(pid) for pid in self.labels},
            self._spec_source,
        )

    @cached_property
    def _spec_source(self) -> str:
        """A file that names the cluster: the process.json of a process with the spec."""
        for row in records(self.dump.processes):
            if any("_hosts" in str(a) for a in row["args"]) or "TF_CONFIG" in row["env"]:
                return self.sources.process(int(row["pid"]))
        return layout.MANIFEST

    @cached_property
    def health(self) -> dict[str, Health]:
        return self._cluster.health

    def connected_members(self, pid: int) -> list[str]:
        return self._cluster.connected_members(pid)

    def in_collective(self, pid: int) -> list[Thread]:
        """Its threads inside a TF2 collective, the stuck ones first."""
        return self._cluster.in_collective(pid)

    @cached_property
    def wait_for(self) -> list[WaitEdge]:
        return self._cluster.wait_for

    @cached_property
    def wait_for_sinks(self) -> list[str]:
        return self._cluster.wait_for_sinks

    @cached_property
    def process_states(self) -> dict[int, str]:
        return self._cluster.process_states

    @cached_property
    def exited_pids(self) -> set[int]:
        out = self.dump.outcomes
        if out.empty:
            return set()
        gone = out[(out["status"] == "failed") & (out["kind"] == FailureKind.EXITED.value)]
        return {int(t) for t in gone["target"] if str(t).isdigit()}

    @cached_property
    def tf_unanswered(self) -> dict[str, str]:
        """address -> reason, for profiler probes that got no answer."""
        servers = self.dump.tf_servers
        if servers.empty:
            return {}
        bad = servers[servers["kind"] == FailureKind.NO_ANSWER.value]
        return {str(r["address"]): str(r["reason"]) for r in records(bad)}

    # -- per-process measurements ---------------------------------------------------------

    @cached_property
    def stat_timeouts(self) -> list[tuple[int, int]]:
        """(pid, round) where stat() of an open file did not return: a hung filesystem."""
        pr = self.dump.process_rounds
        if pr.empty:
            return []
        stuck = pr[pr["stat_timeout"].astype(bool)]
        return [(int(r["pid"]), int(r["round"])) for r in records(stuck)]

    def max_rss(self, pid: int) -> int | None:
        return self._max_rss.get(pid)

    @cached_property
    def _max_rss(self) -> dict[int, int]:
        pr = self.dump.process_rounds
        if pr.empty:
            return {}
        rss = pr[["pid", "rss_bytes"]].dropna()
        rss = rss[rss["rss_bytes"].map(lambda v: isinstance(v, (int, float)))]
        if rss.empty:
            return {}
        largest = rss.groupby("pid")["rss_bytes"].max()
        return {as_int(pid): int(value) for pid, value in largest.items()}

    def open_files(self, pid: int) -> list[str]:
        files = self.dump.files
        if files.empty:
            return []
        return [str(p) for p in files.loc[files["pid"] == pid, "path"].unique()]

    @cached_property
    def write_rates(self) -> dict[int, float]:
        return checkpoint_facts.write_rates(self.dump.process_rounds)

    # -- checkpoints -------------------------------------------------------------------------

    @cached_property
    def checkpoints(self) -> list[CheckpointProgress]:
        return checkpoint_facts.checkpoint_progress(
            self.dump.checkpoint_rounds, self.dump.checkpoint_files
        )

    @cached_property
    def checkpoint_progress(self) -> dict[str, CheckpointProgress]:
        return {c.dir: c for c in self.checkpoints}

    @cached_property
    def growing_checkpoints(self) -> list[CheckpointProgress]:
        """Watched directories whose files grew during the capture (and always answered)."""
        return [c for c in self.checkpoints if (c.growing or c.temp_growing) and not c.timed_out]

    @cached_property
    def saver_pids(self) -> set[int]:
        return {t.pid for t in self.threads if t.in_save}

    @cached_property
    def save_is_writing(self) -> bool:
        """Bytes of a save flow: a watched checkpoint directory grows, or, with none
        watched, a process inside a save writes a stream of data. The line between a slow
        save and a stuck one."""
        if self.growing_checkpoints:
            return True
        return not self.checkpoints and any(
            self.write_rates.get(pid, 0.0) >= checkpoint_facts.MIN_WRITE_RATE
            for pid in self.saver_pids
        )

    def checkpoint_source(self, directory: str) -> str:
        for entry in self.dump.manifest.get("checkpoint_dirs") or []:
            if isinstance(entry, dict) and entry.get("dir") == directory:
                prefix = entry.get("prefix")
                return self.sources.checkpoint(
                    int(entry.get("index", -1)), prefix if isinstance(prefix, str) else ""
                )
        return layout.MANIFEST

    def previous_checkpoint_size(self, directory: str) -> int:
        progress = self.checkpoint_progress.get(directory)
        if progress is None:
            return 0
        return checkpoint_facts.previous_size(
            self.dump.checkpoint_files, directory, progress.last_checkpoint
        )

    # -- progress over the capture's window -------------------------------------------------

    @cached_property
    def window(self) -> tuple[float, float] | None:
        """From the first round's start to the capture's end (its last watch, its logs)."""
        rounds = [(r["index"], r["started_at"], r["ended_at"]) for r in records(self.dump.rounds)]
        starts = [s for _, s, _ in rounds if progress_facts._finite(s)]
        if not starts:
            return None
        ends = [e for _, _, e in rounds if progress_facts._finite(e)]
        ended: Any = self.dump.manifest.get("ended_at")
        end = float(ended) if progress_facts._finite(ended) else max(ends or starts)
        return float(min(starts)), max(end, float(min(starts)))

    @cached_property
    def placed_lines(self) -> dict[tuple[Any, str, int], progress_facts.Placed]:
        window = self.window
        rounds = [
            (int(r["index"]), float(r["started_at"]))
            for r in records(self.dump.rounds)
            if isinstance(r["index"], int) and progress_facts._finite(r["started_at"])
        ]
        return progress_facts.place_lines(
            self.dump.log_lines,
            self.dump.log_sizes,
            rounds,
            window[1] if window else None,
            log_facts.capture_year(self.dump.manifest.get("started_at")),
            self._clock_offsets,
        )

    @cached_property
    def _clock_offsets(self) -> dict[int, float]:
        """pid -> seconds its host's clock is behind this one's (a dump of several hosts)."""
        offsets = self.dump.manifest.get("host_offsets")
        procs = self.dump.processes
        if not isinstance(offsets, dict) or procs.empty or "host" not in procs.columns:
            return {}
        return {
            int(pid): float(offsets.get(str(host), 0.0))
            for pid, host in zip(procs["pid"].tolist(), procs["host"].tolist(), strict=True)
        }

    @cached_property
    def progress(self) -> list[LogProgress]:
        """Each log's steps during the capture (a process's stdout and stderr apart)."""
        window = self.window
        if window is None:
            return []
        lines = self.dump.log_lines
        placed = self.placed_lines if not lines.empty else {}
        out = []
        extra = self._extra_log_sources
        # One pass over the columns (a 1,000-process dump has ~1,000 logs: a pandas groupby
        # with a sort per log cost seconds), each log in the order it first appears.
        logs: dict[tuple[int | None, str], list[tuple[int, str]]] = {}
        if not lines.empty:
            for pid, stream, line_no, text in zip(
                lines["pid"].tolist(),
                lines["stream"].tolist(),
                lines["line_no"].tolist(),
                lines["text"].tolist(),
                strict=True,
            ):
                key = (None if pid is None or pd.isna(pid) else as_int(pid), str(stream))
                logs.setdefault(key, []).append((int(line_no), str(text)))
        for (pid_int, stream), numbered in logs.items():
            numbered.sort(key=lambda item: item[0])
            texts = [(text, placed[(pid_int, stream, no)]) for no, text in numbered]
            if pid_int is not None:
                role = self.role(pid_int)
                source = self.sources.std_stream(pid_int, stream)
            else:
                role, source = "log", extra.get(stream, layout.MANIFEST)
            found = progress_facts.step_progress(role, pid_int, source, texts, window)
            if found is not None:
                out.append(found)
        for record in self.flights:
            recorded = flight_facts.progress(record, window)
            if recorded is not None:
                out.append(recorded)
        return out

    @cached_property
    def _extra_log_sources(self) -> dict[str, str]:
        return {
            str(e.get("path")): str(e.get("file"))
            for e in self.dump.manifest.get("logs") or []
            if isinstance(e, dict)
        }

    # -- the flight recorder ------------------------------------------------------------------

    @cached_property
    def flights(self) -> list[FlightRecord]:
        """What each process that runs postmortem.recorder recorded about itself."""
        window = self.window
        records = flight_facts.flight_records(
            self.dump.frames_by_name, self.labels, window[1] if window else None
        )
        if not self.dump.origins:
            return records
        return [replace(r, source=self.sources.flight(r.pid)) for r in records]

    def flight(self, pid: int) -> FlightRecord | None:
        return next((f for f in self.flights if f.pid == pid), None)

    @cached_property
    def open_saves(self) -> list[tuple[FlightRecord, Any]]:
        """(record, save) for each process whose recorder saw a save begin and not end."""
        out = []
        for record in self.flights:
            save = record.open_save
            if save is not None:
                out.append((record, save))
        return out

    @cached_property
    def saves(self) -> list[SaveCadence]:
        window = self.window
        if window is None:
            return []
        found = (
            progress_facts.save_cadence(c, self.dump.checkpoint_files, window)
            for c in self.checkpoints
        )
        return [c for c in found if c is not None]

    # -- logs ----------------------------------------------------------------------------------

    @cached_property
    def logs(self) -> dict[str, LogFacts]:
        out: dict[str, LogFacts] = {}
        lines_df = self.dump.log_lines
        if lines_df.empty:
            return out
        ordered = lines_df.sort_values(["stream", "line_no"], kind="stable")
        extra = self._extra_log_sources
        key_pid: Any
        for (key_pid, stream), grp in ordered.groupby(["pid", "stream"], dropna=False, sort=False):
            pid = key_pid
            texts = [str(t) for t in grp["text"].tolist()]
            if pid is not None and not pd.isna(pid):
                pid_int = as_int(pid)
                role = self.role(pid_int)
                key = role
                if key in out:  # stdout and stderr of one process: one log
                    merged = out[key].lines + texts
                    out[key] = log_facts.read_log(role, pid_int, out[key].source, merged)
                    continue
                out[key] = log_facts.read_log(role, pid_int, self.sources.log(pid_int), texts)
            else:
                key = f"log:{len(out)}"
                source = extra.get(str(stream), layout.MANIFEST)
                out[key] = log_facts.read_log("log", None, source, texts)
        return out

    def oversized_details(self) -> dict[str, object]:
        return log_facts.oversized_details(list(self.logs.values()))
