"""The report of a dump of many processes (issue 14): figures whose size does not grow
with the processes' threads, the wait-for edges the culprit's first, the processes ranked
by suspicion with their details compressed in the page and opened on demand. The dumps are
the benchmark's synthetic ones (benchmarks/synthetic.py: real ps and worker captures
replicated, one ps frozen)."""

from __future__ import annotations

import base64
import gzip
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

import postmortem
from postmortem.model import Incident
from postmortem.report import process_order, render_html
from postmortem.report.figures import (
    COMPACT_MEMBERS,
    MAX_EDGES,
    MAX_PROGRESS_POINTS,
    build_figures,
    thread_states_figure,
)
from postmortem.report.page import MAX_EDGE_ROWS, PLAIN_PROCESSES

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from synthetic import make_dump  # noqa: E402


def big(tmp_path: Path, processes: int, seed: int) -> tuple[Incident, dict[str, Any]]:
    dump = tmp_path / f"dump-{processes}-{seed}"
    truth = make_dump(dump, processes, 2, seed)
    return postmortem.analyze(postmortem.load(dump)), truth


def packed_details(page: str) -> list[str]:
    match = re.search(r'<script type="application/octet-stream" id="pm-details">(.*?)</script>',
                      page, re.DOTALL)
    assert match, "the processes' details are not packed in the page"
    texts: list[str] = json.loads(gzip.decompress(base64.b64decode(match.group(1))))
    return texts


@pytest.mark.parametrize("processes, seed", [(60, 1), (75, 4)])
def test_a_big_dump_draws_every_member_and_the_culprits_edges_first(
        tmp_path: Path, processes: int, seed: int) -> None:
    # GIVEN a dump of more members than a labelled column holds, one ps frozen
    incident, truth = big(tmp_path, processes, seed)
    culprit = truth["culprit_role"]
    assert incident.verdict.culprit is not None and incident.verdict.culprit.role == culprit
    assert len(incident.members) > COMPACT_MEMBERS
    # WHEN the figures are built
    figures = build_figures(incident, process_order(incident))
    cluster = figures["cluster"].figure
    assert cluster is not None
    # THEN every member is a point, and only the culprit carries a label
    points = {text for trace in cluster["data"] for text in trace["text"]}
    assert len(points) == len(incident.members)
    labelled = [t for t in cluster["data"] if "text" in t["mode"]]
    assert [t["name"] for t in labelled] == ["culprit"]
    # AND the arrows are capped, every edge into or out of the culprit among them
    arrows = [a for a in cluster["layout"]["annotations"] if a.get("showarrow")]
    edges = [pair for e in incident.wait_for for pair in e.pairs()]
    assert len(edges) == incident.wait_edge_count > MAX_EDGES >= len(arrows)
    near = [(a, b) for a, b, _ in edges if culprit in (a, b)]
    assert near and len(near) <= len(arrows)
    drawn = [a["hovertext"] for a in arrows]
    for a, b in near:
        assert any(text.startswith(f"{a} waits on {b}:") for text in drawn), (a, b)
    assert f"of {len(edges)} wait-for edges drawn" in figures["cluster"].note


def test_the_thread_figure_does_not_grow_with_the_processes(tmp_path: Path) -> None:
    # GIVEN two dumps of the same job shape, one twice the other's size
    small, _ = big(tmp_path, 60, 2)
    large, _ = big(tmp_path, 120, 2)

    def rows(incident: Incident) -> list[str]:
        culprit = incident.verdict.culprit
        assert culprit is not None and culprit.pid is not None
        spec = thread_states_figure(
            incident.threads, incident.thread_groups, [0, 1], process_order(incident),
            {m.role: m.job for m in incident.members}, [culprit.pid])
        assert spec.figure is not None
        labels: list[str] = spec.figure["data"][0]["y"]
        return labels

    # WHEN their thread figures are drawn with the rows of alike threads merged
    few, many = rows(small), rows(large)
    # THEN they have as many rows: the culprit's own threads, then one row per job,
    # thread name, status and kernel states, with counts
    assert len(many) == len(few) < 60
    culprit = large.verdict.culprit
    assert culprit is not None
    assert many[0].startswith(f"{culprit.role} \u00b7 ")
    workers = next(label for label in many if label.startswith("worker \u00d7") and
                   "MainThread" in label)
    assert workers.startswith(f"worker \u00d7{sum(1 for m in large.members if m.job == 'worker')}")


def test_step_lines_are_one_trace_per_job(tmp_path: Path) -> None:
    incident, _ = big(tmp_path, 60, 5)
    spec = build_figures(incident, process_order(incident))["progress"]
    assert spec.figure is not None
    lines = [t for t in spec.figure["data"] if t["mode"] == "lines+markers"]
    jobs = {m.job for m in incident.members if m.pid is not None}
    assert {t["name"].split(" (")[0] for t in lines} <= jobs
    series = [s for s in incident.timeline.steps if any(p.time is not None for p in s.points)]
    # every series is in its job's trace, each ended by a gap
    assert sum(t["x"].count(None) for t in lines) == len(series)
    points = sum(len(t["x"]) for t in lines) - len(series)
    assert points <= MAX_PROGRESS_POINTS + len(series)


def test_processes_are_ranked_and_their_details_packed(tmp_path: Path) -> None:
    # GIVEN a big dump
    incident, truth = big(tmp_path, 80, 7)
    assert len(incident.processes) > PLAIN_PROCESSES
    assert incident.wait_edge_count > MAX_EDGE_ROWS
    # WHEN the page is written
    page = render_html(incident)
    # THEN the processes come culprit first, then those with problems
    pids = [int(p) for p in re.findall(r'<details data-pid="(\d+)"', page)]
    assert pids[0] == truth["culprit_pid"]
    assert sorted(pids) == sorted(p.pid for p in incident.processes)
    problems = {m.pid for m in incident.members if m.problems}
    ranks = [i for i, pid in enumerate(pids) if pid in problems]
    assert ranks == list(range(1, len(ranks) + 1)) or ranks == list(range(len(ranks)))
    # AND each one's details unpack to its own command line and stacks, in page order
    texts = packed_details(page)
    assert len(texts) == len(pids)
    by_pid = {p.pid: p for p in incident.processes}
    for pid, text in zip(pids, texts, strict=True):
        flag = next(a for a in by_pid[pid].cmdline if a.startswith("--task_index="))
        assert flag in text
    assert any('<pre class="stacks">' in t for t in texts)
    # AND the page itself holds no raw stack
    outside = re.sub(r'<script type="application/octet-stream".*?</script>', "", page,
                     flags=re.DOTALL)
    assert '<pre class="stacks">' not in outside
    # AND the wait-for table is capped, saying where the rest are
    assert f"{MAX_EDGE_ROWS} of {incident.wait_edge_count} edges listed" in page


def test_a_small_dump_keeps_its_details_in_the_page(tmp_path: Path) -> None:
    incident, _ = big(tmp_path, 20, 0)
    page = render_html(incident)
    assert 'id="pm-details"' not in page
    assert '<pre class="stacks">' in page
    cluster = build_figures(incident, process_order(incident))["cluster"].figure
    assert cluster is not None
    assert all("text" in t["mode"] for t in cluster["data"])


@pytest.mark.parametrize(("processes", "seed"), [(70, 4), (130, 9)])
def test_workers_that_wait_on_the_same_members_share_one_wait_for_entry(
        tmp_path: Path, processes: int, seed: int) -> None:
    # GIVEN a dump of many workers stuck in session.run against the same ps, one frozen
    incident, truth = big(tmp_path, processes, seed)
    ps = sorted(m.role for m in incident.members if m.job == "ps")
    stuck = {t.role for t in incident.threads
             if t.status.value == "stuck" and t.waits_on.value == "session-run"}
    assert len(stuck) > 10 and len(ps) > 1
    # WHEN the wait-for graph is read
    entries = incident.wait_for
    # THEN every stuck worker waits on every ps, each pair exactly once...
    pairs = [(a, b) for e in entries for a, b, _ in e.pairs()]
    assert len(pairs) == len(set(pairs)) == incident.wait_edge_count
    assert {(w, p) for w in stuck if not w.startswith("ps") for p in ps} <= set(pairs)
    # ...but written as far fewer entries than waiters: the alike ones share one
    waiters = [w.role for e in entries for w in e.waiters]
    assert len(entries) < len(waiters) / 10
    # ...in the analysis's order, waiter by waiter as the members are listed
    order = {m.role: i for i, m in enumerate(incident.members)}
    assert waiters == sorted(waiters, key=order.__getitem__)
    assert all(list(e.waits_on) == sorted(set(e.waits_on)) for e in entries)
    assert all(w.role not in e.waits_on and w.why.startswith("session.run in ")
               for e in entries for w in e.waiters)
    # AND the frozen ps, waited on by everyone, is where the graph bottoms out
    assert truth["culprit_role"] in incident.wait_for_sinks


def test_drawn_edges_counts_every_pair_and_puts_the_culprits_first() -> None:
    from postmortem.model import WaitEdge, Waiter
    from postmortem.report.figures import drawn_edges

    # GIVEN three workers waiting on two ps, and one ps waiting on a worker
    workers = tuple(Waiter(f"worker:{i}", f"session.run in t{i}") for i in range(3))
    edges = [WaitEdge(workers, ("ps:0", "ps:1")), WaitEdge((Waiter("ps:1", "x"),), ("worker:2",))]
    # WHEN room is short, THEN the culprit's edges come first, and the count is every pair
    shown, total = drawn_edges(edges, "ps:1", 4)
    assert total == 7
    assert shown[:4] == [("worker:0", "ps:1", "session.run in t0"),
                         ("worker:1", "ps:1", "session.run in t1"),
                         ("worker:2", "ps:1", "session.run in t2"),
                         ("ps:1", "worker:2", "x")]
    # AND with room for all, every pair in the analysis's order
    shown, total = drawn_edges(edges, "ps:1", 10)
    assert total == len(shown) == 7 and shown[0] == ("worker:0", "ps:0", "session.run in t0")
    # AND only the pairs whose both ends are placed count when a figure places some
    shown, total = drawn_edges(edges, None, 2, {"worker:0", "worker:2", "ps:0", "ps:1"})
    assert total == 5 and len(shown) == 2
    assert all(a != "worker:1" and b != "worker:1" for a, b, _ in shown)
