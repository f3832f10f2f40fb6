"""The HTML report: figure data as pure functions, and the page's escaping and
self-containment, on a dump written in the capture's format (shapes copied from real
captures) and on the recorded samples when they are present."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pytest

import postmortem
from postmortem.cli import main as cli_main
from postmortem.errors import OutputExistsError
from postmortem.model import Incident, Member, Status, WaitEdge, Waiter
from postmortem.outputs import default_output, write_text
from postmortem.report import process_order, render_html
from postmortem.report.figures import (
    TREE_COLORS,
    build_figures,
    cluster_map_figure,
    ptext,
    stack_tree_figure,
    thread_rows,
    timeline_figure,
)
from postmortem.report.page import script_json
from tests.conftest import HOSTILE, PS, SIX_MB, W0, DumpBuilder, sample_dumps


def incident_of(dump: Path) -> Incident:
    return postmortem.analyze(postmortem.load(dump))


def figure_payload(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="pm-figures">(.*?)</script>', page,
                      re.DOTALL)
    assert match, "the figures' JSON is missing"
    return dict(json.loads(match.group(1)))


def all_strings(value: Any) -> Any:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from all_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from all_strings(item)


# -- figure data ------------------------------------------------------------------------

def test_plotly_text_is_escaped_but_readable() -> None:
    assert ptext(HOSTILE) == html.escape(HOSTILE, quote=False)
    assert "<" not in ptext(HOSTILE) and ">" not in ptext(HOSTILE)
    assert ptext("a" * 50, limit=10) == "a" * 9 + "\u2026"


def test_cluster_map_highlights_the_culprit_marks_the_absent_and_draws_wait_for_edges() -> None:
    members = [
        Member("ps:0", "ps", 0, "h:1", 1, "h", problems=("stopped",)),
        Member("worker:0", "worker", 0, "h:2", 2, "h"),
        Member("worker:1", "worker", 1, "h:3", None, "h"),
    ]
    edges = [WaitEdge((Waiter("worker:0", "session.run"),), ("ps:0",))]
    spec = cluster_map_figure(members, edges,
                              {"worker:0": {Status.STUCK: 1}}, "ps:0")
    assert spec.figure is not None
    traces = {t["name"]: t for t in spec.figure["data"]}
    assert traces["culprit"]["x"] == [0.0]  # ps column first after chief
    assert "absent" in traces["absent from the dump"]["text"][0]
    assert traces["absent from the dump"]["marker"]["symbol"] == "square-open"
    assert "1 stuck" in traces["no problem seen"]["hovertext"][0]
    (arrow,) = spec.figure["layout"]["annotations"]
    assert (arrow["ax"], arrow["x"]) == (1.0, 0.0)  # worker:0 -> ps:0
    assert arrow["arrowcolor"] == "#d62728"


def test_cluster_map_boxes_the_collective_group_and_says_who_is_outside() -> None:
    members = [
        Member("worker:0", "worker", 0, "h:2", 2, "h", collective="inside"),
        Member("worker:1", "worker", 1, "h:3", 3, "h", collective="outside"),
        Member("evaluator:0", "evaluator", 0, None, 4, "h"),
    ]
    spec = cluster_map_figure(members, [], {}, "worker:1")
    assert spec.figure is not None
    (box,) = spec.figure["layout"]["shapes"]
    assert box["x0"] < 0.0 < box["x1"] < 1.0  # the worker column (0), not the evaluator's (1)
    notes = [a["text"] for a in spec.figure["layout"]["annotations"]]
    assert notes == ["collective group: 1 in a collective; not in one: worker:1"]
    texts = [t for trace in spec.figure["data"] for t in trace["text"]]
    assert any("in no collective" in t for t in texts)
    # a job without collectives: no box
    plain = cluster_map_figure([Member("ps:0", "ps", 0, "h:1", 1, "h")], [], {}, None)
    assert plain.figure is not None and plain.figure["layout"]["shapes"] == []


def test_cluster_map_without_members_says_so() -> None:
    spec = cluster_map_figure([], [], {}, None)
    assert spec.figure is None and spec.note


def test_thread_rows_group_native_threads_and_put_the_culprit_first(cluster_dump: Path) -> None:
    incident = incident_of(cluster_dump)
    rows = thread_rows(incident.threads, incident.thread_groups, [PS, W0])
    assert rows[0].pid == PS
    grouped = [r for r in rows if r.count == 4]
    assert {r.pid for r in grouped} == {PS, W0}  # tf_Eigen0..3 in one row per process
    main = next(r for r in rows if r.pid == W0 and "MainThread" in r.label)
    assert main.states == {0: "S", 1: "S", 2: "S"}
    assert main.status is Status.STUCK
    assert "Saver.save" in main.hover


def test_stack_tree_counts_threads_and_lists_the_processes_sharing_a_frame(
        cluster_dump: Path) -> None:
    incident = incident_of(cluster_dump)
    spec = stack_tree_figure(incident.stack_tree, incident.process_labels(), "pyspy",
                             culprit_pid=PS)
    assert spec.figure is not None
    trace = spec.figure["data"][0]
    assert trace["type"] == "icicle"
    assert trace["values"][0] == 3  # ps main, worker main, worker listener (last round each)
    by_id = dict(zip(trace["ids"], range(len(trace["ids"])), strict=False))
    for i, parent in enumerate(trace["parents"]):  # branchvalues "total" must hold
        if parent:
            children = [j for j, p in enumerate(trace["parents"]) if p == trace["ids"][i]]
            assert trace["values"][i] >= sum(trace["values"][j] for j in children)
            assert parent in by_id
    module = [i for i, label in enumerate(trace["labels"]) if label.startswith("&lt;module&gt;")]
    assert len(module) == 1  # both processes share the outermost frame
    shared = trace["customdata"][module[0]][0]
    assert "ps:0 (pid 101)" in shared and "worker:0 (pid 102)" in shared
    assert "(culprit)" in shared
    save = trace["labels"].index("Saver.save (saver.py:1300)")
    assert trace["values"][save] == 1
    colors = trace["marker"]["colors"]
    assert colors[save] == TREE_COLORS[Status.STUCK]  # coloured by the thread's status
    assert colors[module[0]] == TREE_COLORS[Status.STUCK]  # the worst status through a frame


def test_timeline_has_tf_ops_rounds_and_timed_log_events(cluster_dump: Path) -> None:
    timeline = incident_of(cluster_dump).timeline
    events = timeline.log_events
    assert [e.kind.value for e in events] == ["step", "step", "save", "error", "step"]
    assert events[-1].time is None
    spec = timeline_figure(timeline)
    assert spec.figure is not None
    traces = {t["name"]: t for t in spec.figure["data"]}
    assert len(traces["capture round"]["x"]) == 3
    assert any("save/SaveV2" in h for h in traces["checkpoint op"]["hovertext"])
    assert traces["checkpoint op"]["x"] == [800.0]  # ms
    assert len(traces["transfer"]["x"]) == 1
    assert traces["log: error"]["x"] == ["2023-11-14 22:13:16.250000"]
    assert traces["log: save"]["y"] == ["worker:0 (pid 102) stderr"]
    assert "1 log event(s) carry no timestamp" in spec.note


def test_checkpoint_figure_plots_total_and_file_sizes(cluster_dump: Path) -> None:
    incident = incident_of(cluster_dump)
    spec = build_figures(incident, process_order(incident))["checkpoint"]
    assert spec.figure is not None
    total, *files = spec.figure["data"]
    assert total["y"] == [4096 + 120, 8192 + 120, 8192 + 120]
    assert any("part-00000" in t["name"] for t in files)


def test_figures_for_a_dump_without_data_say_what_is_missing(tmp_path: Path) -> None:
    # GIVEN a dump whose one process has no round at all (it exited before round 0)
    b = DumpBuilder(tmp_path / "bare")
    b.process(PS, ["/job/train.py"])
    incident = incident_of(b.finish())
    figures = build_figures(incident, process_order(incident))
    assert all(s.figure is None and s.note for k, s in figures.items() if k != "cluster")
    page = render_html(incident)
    assert "no-hang-found" in page


# -- the page ---------------------------------------------------------------------------

def test_page_has_the_verdict_on_top_and_every_section(cluster_dump: Path) -> None:
    incident = incident_of(cluster_dump)
    verdict = incident.verdict
    page = render_html(incident)
    top = page.index('id="verdict"')
    assert top < page.index('id="cluster"') < page.index('id="threads"')
    assert html.escape(verdict.finding.summary) in page
    assert html.escape(verdict.finding.fix) in page
    for key in ("cluster", "progress", "threads", "stacks", "timeline", "checkpoint"):
        assert f'id="fig-{key}"' in page
    assert {f["key"] for f in figure_payload(page)["figures"]} == {
        "cluster", "progress", "threads", "stacks", "timeline", "checkpoint"}
    assert 'id="evidence"' in page and 'data-pid="102"' in page
    assert "Saver.save (/usr/lib/python3/site-packages/tensorflow/python/training/saver.py" \
           ":1300)" in page  # raw stacks on demand


def test_page_is_self_contained(cluster_dump: Path) -> None:
    page = render_html(incident_of(cluster_dump))
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    assert page.count("* plotly.js v") == 1  # embedded once
    ours = page.split('<script type="application/json"')[0]  # everything but the scripts
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", ours)
    assert "<link" not in ours and "@import" not in ours
    assert len(re.findall(r"<script\b", page)) == 3  # figures JSON, plotly.js, page.js
    assert len(page.encode()) < SIX_MB


def test_hostile_strings_render_as_text(hostile_dump: Path) -> None:
    dump = postmortem.load(hostile_dump)
    assert HOSTILE in set(dump.py_threads["thread_name"])
    page = render_html(postmortem.analyze(dump))
    assert HOSTILE not in page
    assert "<img" not in page
    assert "window.__pwned" not in page.replace("window.__pwned=", "")  # only inside escapes
    assert len(re.findall(r"<script\b", page)) == 3
    assert len(re.findall(r"</script", page, re.IGNORECASE)) == 3
    assert html.escape(HOSTILE) in page  # shown, as text, in raw stacks and logs
    strings = list(all_strings(figure_payload(page)))
    assert any("&lt;script&gt;window.__pwned=1" in s for s in strings)  # plotly shows it
    assert not any("<script" in s or "<img" in s for s in strings)


def test_script_json_cannot_close_its_script_element() -> None:
    text = script_json({"a": "</script><!-- & \u2028"})
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == {"a": "</script><!-- & \u2028"}


def test_an_output_is_never_replaced_without_force(cluster_dump: Path, tmp_path: Path) -> None:
    page = render_html(incident_of(cluster_dump))
    target = tmp_path / "out" / "report.html"
    write_text(target, page)
    assert target.read_text().startswith("<!DOCTYPE html>")
    target.write_text("keep me")
    with pytest.raises(OutputExistsError):
        write_text(target, page)
    assert target.read_text() == "keep me"
    write_text(target, page, force=True)
    assert "keep me" not in target.read_text()
    assert not list(target.parent.glob(".*tmp"))


def test_report_command_names_the_output_after_the_dump(cluster_dump: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert cli_main(["report", str(cluster_dump)]) == 0
    expected = default_output(cluster_dump, ".html")
    assert expected == cluster_dump.parent / "dump.html" and expected.is_file()
    assert cli_main(["report", str(cluster_dump)]) == 7  # exists: no overwrite
    assert "--force" in capsys.readouterr().err
    assert cli_main(["report", str(cluster_dump), "--force"]) == 0
    other = cluster_dump.parent / "r.html"
    assert cli_main(["report", str(cluster_dump), "-o", str(other)]) == 0 and other.is_file()


def test_analyze_html_writes_the_report(cluster_dump: Path) -> None:
    out = cluster_dump.parent / "a.html"
    assert cli_main(["analyze", str(cluster_dump), "--html", str(out)]) == 0
    assert 'id="verdict"' in out.read_text()


@pytest.mark.parametrize("sample", sample_dumps(), ids=lambda p: p.name)
def test_samples_render_under_six_megabytes(sample: Path) -> None:
    incident = incident_of(sample)
    page = render_html(incident)
    assert len(page.encode()) < SIX_MB
    assert f'data-hang-class="{incident.verdict.hang_class.value}"' in page
    payload = figure_payload(page)
    assert payload["figures"], "a sample with no figure at all"


def test_progress_draws_each_log_s_steps_with_saves_and_the_capture_shaded(
        cluster_dump: Path) -> None:
    incident = incident_of(cluster_dump)
    spec = build_figures(incident, process_order(incident))["progress"]
    assert spec.figure is not None
    traces = {t["name"]: t for t in spec.figure["data"]}
    steps = traces["worker:0 (pid 102) stderr"]
    assert steps["y"] == [100, 200]  # the line without a time is not drawn
    save = traces["checkpoint save"]
    assert save["y"] == [200]  # at the step the save came after
    shapes = spec.figure["layout"]["shapes"]
    assert len(shapes) == 1 + 3  # the capture's window, then each round
