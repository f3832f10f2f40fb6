"""Facts and verdict -> the Incident every renderer draws.

Everything a renderer shows is decided here once: which process has which role and label,
which stack source the tree uses, which log lines become timeline events and when they
happened, which TF events are checkpoint ops or transfers, what the capture could not do.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import pandas as pd

from collectors.layout import CollectorStatus, FailureKind, StackSource
from postmortem.analysis import flight as flight_facts
from postmortem.analysis import logs as log_facts
from postmortem.analysis.cluster import COLLECTIVE_JOBS
from postmortem.analysis.facts import Facts
from postmortem.analysis.stacktree import last_samples, merged_tree, stack_samples
from postmortem.analysis.strategy import detect as detect_strategy
from postmortem.loading import records
from postmortem.model import (
    CaptureProblem,
    CaptureRound,
    DumpInfo,
    Incident,
    LoadProblem,
    LogSummary,
    Member,
    Outlier,
    Process,
    Strategy,
    TfEvent,
    TfEventKind,
    Timeline,
    Verdict,
)

MAX_STACK_CLASSES = 100


def _with_collectives(facts: Facts, strategy: Strategy) -> list[Member]:
    """Each member of a collective group, marked inside or outside a collective: the
    cluster map groups them. Only for jobs that run collectives (MWMS, or any member seen
    inside one)."""
    group = [m for m in facts.members if m.job in COLLECTIVE_JOBS]
    inside = {m.role for m in group if m.pid is not None and facts.in_collective(m.pid)}
    if strategy is not Strategy.MWMS and not inside:
        return list(facts.members)
    out = []
    for m in facts.members:
        if m.job not in COLLECTIVE_JOBS:
            out.append(m)
            continue
        seen = m.pid is not None and any(t.python and t.stack for t in facts.threads_of(m.pid))
        where = "inside" if m.role in inside else "outside" if seen else "unseen"
        out.append(replace(m, collective=where))
    return out


def build_incident(facts: Facts, verdict: Verdict) -> Incident:
    dump = facts.dump
    processes = _processes(facts)
    labels = {p.pid: p.label for p in processes}
    samples = stack_samples(dump.frames)
    tree_source = next(
        (s for s in StackSource if any(sample.source is s for sample in samples)), None
    )
    statuses = {(t.pid, t.tid): t.status for t in facts.threads}
    tree = (
        merged_tree(last_samples(samples, tree_source), labels, statuses)
        if tree_source is not None
        else None
    )
    strategy, strategy_evidence = detect_strategy(facts)
    return Incident(
        dump=_dump_info(facts),
        verdict=verdict,
        members=tuple(_with_collectives(facts, strategy)),
        processes=tuple(processes),
        threads=tuple(facts.threads),
        thread_groups=tuple(facts.thread_groups),
        wait_for=tuple(facts.wait_for),
        wait_for_sinks=tuple(facts.wait_for_sinks),
        outliers=tuple(Outlier(role, why) for role, why in facts.outliers),
        stack_classes=tuple(facts.stack_classes[:MAX_STACK_CLASSES]),
        stack_samples=tuple(samples),
        stack_tree=tree,
        tree_source=tree_source,
        timeline=_timeline(facts, labels),
        checkpoints=tuple(facts.checkpoints),
        progress=tuple(facts.progress),
        saves=tuple(facts.saves),
        window=facts.window,
        logs=tuple(
            LogSummary(
                f.role,
                f.last_step,
                len(f.save_lines),
                f.saves_after_last_step,
                tuple((f.oversized + f.grpc_errors)[:5]),
                tuple(f.create_session_waits[:3]),
            )
            for f in facts.logs.values()
        ),
        capture_problems=tuple(_capture_problems(dump.outcomes)),
        load_problems=tuple(
            LoadProblem(str(r["file"]), str(r["problem"])) for r in records(dump.problems)
        ),
        flights=tuple(facts.flights),
        risks=tuple(flight_facts.risks(facts.flights)),
        strategy=strategy,
        strategy_evidence=strategy_evidence,
    )


def _seconds(value: Any) -> float | None:
    """A time from the dump, or None when it is missing or not a finite number."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _dump_info(facts: Facts) -> DumpInfo:
    dump = facts.dump
    m = dump.manifest
    command = m.get("command")
    options = m.get("options")
    targets = m.get("targets")
    version = m.get("schema_version")
    return DumpInfo(
        path=str(dump.path),
        name=dump.path.resolve().name or str(dump.path),
        host=dump.host,
        started_at=_seconds(m.get("started_at")),
        ended_at=_seconds(m.get("ended_at")),
        complete=bool(m.get("complete", True)),
        interrupted=bool(m.get("interrupted", False)),
        command=tuple(str(c) for c in command) if isinstance(command, list) else (),
        options=tuple((str(k), str(v)) for k, v in options.items())
        if isinstance(options, dict)
        else (),
        tool_version=str(m.get("tool_version", "")),
        schema_version=version if isinstance(version, int) else 0,
        processes_in_manifest=len(targets) if isinstance(targets, list) else 0,
        processes_loaded=len(dump.processes),
    )


def _processes(facts: Facts) -> list[Process]:
    out = []
    for row in records(facts.dump.processes):
        pid = int(row["pid"])
        out.append(
            Process(
                pid=pid,
                role=facts.role(pid),
                host=str(row.get("host") or facts.host),
                comm=str(row["comm"] or ""),
                exe=str(row["exe"] or ""),
                cwd=str(row["cwd"] or ""),
                cmdline=tuple(_shorten(str(a)) for a in row["args"]),
                python=_flag(row["python"]),
                tensorflow=_flag(row["tensorflow"]),
                states=facts.process_states.get(pid, ""),
                exited=pid in facts.exited_pids,
                rss_bytes=facts.max_rss(pid),
            )
        )
    return out


MAX_ARG = 400  # characters of one command-line argument kept in the model


def _shorten(arg: str) -> str:
    """A --worker_hosts of a 1,000-task job is 20 KB in every process's command line: the
    members hold the cluster, the dump has the whole line."""
    if len(arg) <= MAX_ARG:
        return arg
    return f"{arg[: MAX_ARG - 60]}... ({len(arg):,} characters; the dump has them all)"


def _flag(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _timeline(facts: Facts, labels: dict[int, str]) -> Timeline:
    dump = facts.dump
    rounds = []
    for r in records(dump.rounds):
        start, end = _seconds(r["started_at"]), _seconds(r["ended_at"])
        if start is None or not isinstance(r["index"], int):
            continue
        rounds.append(CaptureRound(int(r["index"]), start, end if end is not None else start))
    placed = facts.placed_lines
    lines = []
    for r in records(dump.log_lines):
        pid = None if pd.isna(r["pid"]) else int(r["pid"])
        where = placed.get((pid, str(r["stream"]), int(r["line_no"])))
        lines.append(
            log_facts.LogLine(
                pid,
                str(r["stream"]),
                int(r["line_no"]),
                str(r["text"]),
                where.time if where else None,
                bool(where and where.estimated),
            )
        )
    events = log_facts.log_events(lines, facts.labels, labels)
    kept, omitted = log_facts.trim_steps(events)
    tf_events, untimed = _tf_events(facts, labels)
    return Timeline(
        rounds=tuple(rounds),
        log_events=tuple(kept),
        tf_events=tuple(tf_events),
        steps=tuple(log_facts.step_series(events)),
        tf_events_without_time=untimed,
        step_lines_omitted=omitted,
    )


def tf_kind(name: str) -> TfEventKind:
    lowered = name.lower()
    if any(k in lowered for k in ("save", "restore", "mergev2", "checkpoint")):
        return TfEventKind.CHECKPOINT_OP
    if any(k in lowered for k in ("_send", "_recv", "recvtensor", "rendezvous", "grpc")):
        return TfEventKind.TRANSFER
    return TfEventKind.OP


def tf_seconds(start_ns: float, capture_start: float) -> float:
    """Profiler times are Unix nanoseconds; a small value is an offset into the capture."""
    return start_ns / 1e9 if start_ns > 1e17 else capture_start + start_ns / 1e9


def _tf_events(facts: Facts, labels: dict[int, str]) -> tuple[list[TfEvent], int]:
    events = facts.dump.tf_events
    if events.empty:
        return [], 0
    capture_start = _seconds(facts.dump.manifest.get("started_at")) or 0.0
    pid_by_address = {m.address: m.pid for m in facts.members if m.address and m.pid is not None}
    out = []
    untimed = 0
    for r in records(events.sort_values("start_ns")):
        start_ns = _seconds(r["start_ns"])
        if start_ns is None:
            untimed += 1
            continue
        address = str(r["address"])
        pid = pid_by_address.get(address)
        name = str(r["name"] or r["op"] or "?")
        duration = _seconds(r["duration_ns"]) or 0.0
        out.append(
            TfEvent(
                address=address,
                pid=pid,
                track=labels.get(pid, f"TF server {address}")
                if pid is not None
                else (f"TF server {address}"),
                plane=str(r["plane"] or ""),
                line=str(r["line"] or ""),
                name=name,
                node=str(r["node"] or ""),
                op=str(r["op"] or ""),
                kind=tf_kind(name),
                start=tf_seconds(start_ns, capture_start),
                duration_s=duration / 1e9,
            )
        )
    return out, untimed


def _capture_problems(outcomes: pd.DataFrame) -> list[CaptureProblem]:
    if outcomes.empty:
        return []
    out = []
    for r in records(outcomes[outcomes["status"] != CollectorStatus.OK.value]):
        try:
            status = CollectorStatus(r["status"])
        except ValueError:
            status = CollectorStatus.FAILED
        try:
            kind = FailureKind(r["kind"] or "")
        except ValueError:
            kind = FailureKind.ERROR
        rnd = r["round"]
        out.append(
            CaptureProblem(
                str(r["target"]),
                str(r["collector"]),
                status,
                int(rnd) if isinstance(rnd, (int, float)) and not pd.isna(rnd) else None,
                str(r["reason"] or ""),
                kind,
            )
        )
    return out
