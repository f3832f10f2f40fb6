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
from postmortem.analysis import analyze
from postmortem.cli import main as cli_main
from postmortem.errors import OutputExistsError
from postmortem.exports.common import log_events, process_labels, stack_samples
from postmortem.report import build_figures, default_report_path, render_html, write_report
from postmortem.report.figures import (
    TREE_COLORS,
    cluster_map_figure,
    ptext,
    stack_tree_figure,
    thread_rows,
    timeline_figure,
)
from postmortem.report.page import script_json

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
HOSTILE = '<script>window.__pwned=1</script>"><img src=x onerror="window.__pwned=2">'
T0 = 1_700_000_000.0
PS, W0 = 101, 102
CLUSTER_ARGS = ["--ps_hosts=127.0.0.1:2222", "--worker_hosts=127.0.0.1:2223,127.0.0.1:2224"]
SIX_MB = 6 * 1024 * 1024


def sample_dumps() -> list[Path]:
    if not SAMPLES.is_dir():
        return []
    return sorted(p.parent for p in SAMPLES.glob("*/manifest.json")) + sorted(
        p.parent for p in SAMPLES.glob("*/*/manifest.json"))


def _frame(name: str, filename: str, line: int) -> dict[str, Any]:
    return {"name": name, "filename": filename, "module": None,
            "short_filename": filename.rsplit("/", 1)[-1], "line": line, "locals": None,
            "is_entry": False, "is_shim_entry": False}


SESSION = "/usr/lib/python3/site-packages/tensorflow/python/client/session.py"
SAVER = "/usr/lib/python3/site-packages/tensorflow/python/training/saver.py"
THREADING = "/usr/lib/python3.11/threading.py"
SAVE_STACK = [  # innermost first, as py-spy prints it
    _frame("_call_tf_sessionrun", SESSION, 1477), _frame("BaseSession._run_fn", SESSION, 1384),
    _frame("BaseSession._do_call", SESSION, 1401), _frame("BaseSession._do_run", SESSION, 1394),
    _frame("BaseSession._run", SESSION, 1224), _frame("BaseSession.run", SESSION, 977),
    _frame("Saver.save", SAVER, 1300), _frame("main", "/job/train.py", 80),
    _frame("<module>", "/job/train.py", 99),
]
PS_STACK = [_frame("Server.join", "/usr/lib/python3/site-packages/tensorflow/python/training/"
                   "server_lib.py", 262), _frame("run_ps", "/job/train.py", 40),
            _frame("<module>", "/job/train.py", 99)]
LISTENER_STACK = [_frame("Condition.wait", THREADING, 327), _frame("Event.wait", THREADING, 629),
                  _frame("listen", "/job/hooks.py", 12), _frame("Thread.run", THREADING, 982),
                  _frame("Thread._bootstrap_inner", THREADING, 1045),
                  _frame("Thread._bootstrap", THREADING, 1002)]


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value if isinstance(value, str) else json.dumps(value))


def write_cluster_dump(root: Path, thread_name: str = "checkpoint-listener",
                       error_line: str = "InternalError: Failed to encode tensor to byte buffer",
                       ) -> Path:
    """A ps stopped with SIGSTOP, worker:0 stuck in Saver.save -> session.run, worker:1
    absent; logs, a checkpoint dir whose temp file does not grow, a TF profiler trace."""
    rounds = [{"index": i, "started_at": T0 + i, "ended_at": T0 + i + 0.05} for i in range(3)]
    targets, outcomes = [], []
    for pid, job, stack, state in ((PS, "ps", PS_STACK, "T"), (W0, "worker", SAVE_STACK, "S")):
        pdir = root / "processes" / str(pid)
        targets.append({"pid": pid, "dir": f"processes/{pid}",
                        "process_file": f"processes/{pid}/process.json",
                        "std_streams": {"stderr": f"/job/{job}.err"}})
        _write(pdir / "process.json", {
            "pid": pid, "ppid": 1, "pgid": pid, "comm": "python", "exe": "/usr/bin/python3",
            "cwd": "/job", "cmdline": ["python", "/job/train.py", f"--job_name={job}",
                                       "--task_index=0", *CLUSTER_ARGS],
            "uid": 1000, "starttime_ticks": 1, "env": {}, "python": True, "tensorflow": True,
            "clk_tck": 100})
        port = 2222 if job == "ps" else 2223
        for i in range(3):
            threads = [{"tid": pid, "name": "python", "state": state, "wchan": "futex_do_wait",
                        "utime": 50, "stime": 5}]
            threads += [{"tid": pid + 1000 + k, "name": f"tf_Eigen{k}", "state": state,
                         "wchan": "futex_do_wait", "utime": 1, "stime": 0} for k in range(4)]
            sockets = [{"fd": 5, "inode": 1, "proto": "tcp", "local": f"127.0.0.1:{port}",
                        "remote": "0.0.0.0:0", "tcp_state": "LISTEN", "tx_queue": 0,
                        "rx_queue": 2 if job == "ps" else 0}]
            if job == "worker":
                threads.append({"tid": pid + 500, "name": "listener", "state": "S",
                                "wchan": "futex_do_wait", "utime": 0, "stime": 0})
                sockets.append({"fd": 7, "inode": 2, "proto": "tcp", "local": "127.0.0.1:40000",
                                "remote": "127.0.0.1:2222", "tcp_state": "ESTABLISHED",
                                "tx_queue": 0, "rx_queue": 0})
            rdir = pdir / f"round-{i:03d}"
            _write(rdir / "procfs.json", {
                "pid": pid, "time": T0 + i + 0.01, "state": state, "utime": 50, "stime": 5,
                "num_threads": len(threads), "clk_tck": 100, "threads": threads,
                "io": {"rchar": 1, "wchar": 2, "write_bytes": 0}, "files": [],
                "sockets": sockets})
            traces = [{"pid": pid, "thread_id": 1, "thread_name": "MainThread",
                       "os_thread_id": pid, "active": False, "owns_gil": False, "frames": stack}]
            if job == "worker":
                traces.append({"pid": pid, "thread_id": 2, "thread_name": thread_name,
                               "os_thread_id": pid + 500, "active": False, "owns_gil": False,
                               "frames": LISTENER_STACK})
            _write(rdir / "pyspy.json", traces)
            outcomes += [{"target": str(pid), "collector": c, "status": "ok", "round": i,
                          "reason": "", "seconds": 0.01, "files": []} for c in ("procfs", "pyspy")]
    stamp = "2023-11-14 22:13:{:02d},{:03d}"
    log = [f"{stamp.format(10, 0)} {W0} MainThread INFO global_step: 100 loss = 0.5",
           f"{stamp.format(12, 500)} {W0} MainThread INFO global_step: 200 loss = 0.4",
           f"{stamp.format(15, 0)} {W0} MainThread INFO Saving checkpoint to path /ckpt/model.ckpt",
           f"{stamp.format(16, 250)} {W0} MainThread ERROR {error_line}",
           "a line without a timestamp: step 300"]
    _write(root / "processes" / str(W0) / "logs" / "stderr.txt", "\n".join(log) + "\n")
    for i in range(3):
        _write(root / "checkpoint" / "0" / f"round-{i:03d}.json", {
            "dir": "/ckpt", "time": T0 + i + 0.02, "exists": True, "state_file": "",
            "files": [{"name": "checkpoint", "size": 120, "mtime": T0 - 100},
                      {"name": "model.ckpt-300_temp/part-00000-of-00001.data-00000-of-00001",
                       "size": 4096 * (i + 1) if i < 2 else 8192, "mtime": T0}]})
    events = [("RunGraph", "", "", 0, 900_000_000),
              ("save/SaveV2:SaveV2", "save/SaveV2", "SaveV2", 1_000_000, 800_000_000),
              ("edge_6_w/_Recv:_Recv", "edge_6_w/_Recv", "_Recv", 2_000_000, 700_000_000)]
    _write(root / "tf" / "0" / "events.json", {
        "address": "127.0.0.1:2223", "traced_at": T0 + 0.5, "duration_ms": 500, "answered": True,
        "idle": False, "events": [{"plane": "/host:CPU", "line": "TF Ops", "name": n, "node": nd,
                                   "op": op, "start_ns": int((T0 + 0.5) * 1e9) + s,
                                   "duration_ns": d} for n, nd, op, s, d in events]})
    outcomes.append({"target": "127.0.0.1:2223", "collector": "tf_profiler", "status": "ok",
                     "round": None, "reason": "", "seconds": 1.0, "files": []})
    _write(root / "manifest.json", {
        "format": "postmortem-dump", "schema_version": 1, "tool_version": "0.1.0",
        "host": "node-1", "started_at": T0, "ended_at": T0 + 2.1, "complete": True,
        "interrupted": False, "command": ["postmortem", "capture", "--pid", str(PS)],
        "options": {"samples": 3, "interval": 1.0}, "targets": targets, "rounds": rounds,
        "outcomes": outcomes, "tf_servers": [{"index": 0, "address": "127.0.0.1:2223"}],
        "checkpoint_dirs": [{"index": 0, "dir": "/ckpt"}], "logs": [], "pauses": {}})
    return root


@pytest.fixture()
def cluster_dump(tmp_path: Path) -> Path:
    return write_cluster_dump(tmp_path / "dump")


@pytest.fixture()
def hostile_dump(tmp_path: Path) -> Path:
    return write_cluster_dump(tmp_path / "hostile", thread_name=HOSTILE,
                              error_line=f"ERROR {HOSTILE}")


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
        {"role": "ps:0", "job": "ps", "task": 0, "address": "h:1", "pid": 1, "captured": True,
         "problems": ["stopped"]},
        {"role": "worker:0", "job": "worker", "task": 0, "address": "h:2", "pid": 2,
         "captured": True, "problems": []},
        {"role": "worker:1", "job": "worker", "task": 1, "address": "h:3", "pid": None,
         "captured": False, "problems": []},
    ]
    spec = cluster_map_figure(members, [{"from": "worker:0", "to": "ps:0", "why": "session.run"}],
                              [{"role": "worker:0", "status": "stuck"}], "ps:0")
    assert spec.figure is not None
    traces = {t["name"]: t for t in spec.figure["data"]}
    assert traces["culprit"]["x"] == [0.0]  # ps column first after chief
    assert "absent" in traces["absent from the dump"]["text"][0]
    assert traces["absent from the dump"]["marker"]["symbol"] == "square-open"
    assert "1 stuck" in traces["no problem seen"]["hovertext"][0]
    (arrow,) = spec.figure["layout"]["annotations"]
    assert (arrow["ax"], arrow["x"]) == (1.0, 0.0)  # worker:0 -> ps:0
    assert arrow["arrowcolor"] == "#d62728"


def test_cluster_map_without_members_says_so() -> None:
    spec = cluster_map_figure([], [], [], None)
    assert spec.figure is None and spec.note


def test_thread_rows_group_native_threads_and_put_the_culprit_first(cluster_dump: Path) -> None:
    dump = postmortem.load(cluster_dump)
    verdict = analyze(dump)
    rows = thread_rows(dump, verdict.facts["threads"], [PS, W0])
    assert rows[0].pid == PS
    grouped = [r for r in rows if r.count == 4]
    assert {r.pid for r in grouped} == {PS, W0}  # tf_Eigen0..3 in one row per process
    main = next(r for r in rows if r.pid == W0 and "MainThread" in r.label)
    assert main.states == {0: "S", 1: "S", 2: "S"}
    assert main.status == "stuck"
    assert "Saver.save" in main.hover


def test_stack_tree_counts_threads_and_lists_the_processes_sharing_a_frame(
        cluster_dump: Path) -> None:
    dump = postmortem.load(cluster_dump)
    samples = stack_samples(dump.frames)
    labels = process_labels(dump, {PS: "ps:0", W0: "worker:0"})
    spec = stack_tree_figure(samples, labels, "pyspy", culprit_pid=PS,
                             statuses={(W0, W0): "stuck", (PS, PS): "stopped"})
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
    assert colors[save] == TREE_COLORS["stuck"]  # coloured by the thread's status
    assert colors[module[0]] == TREE_COLORS["stuck"]  # the worst status through a frame


def test_timeline_has_tf_ops_rounds_and_timed_log_events(cluster_dump: Path) -> None:
    dump = postmortem.load(cluster_dump)
    events = log_events(dump)
    assert [e.kind for e in events] == ["step", "step", "save", "error", "step"]
    assert events[-1].time is None
    spec = timeline_figure(dump, events, process_labels(dump, {W0: "worker:0"}))
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
    dump = postmortem.load(cluster_dump)
    verdict = analyze(dump)
    spec = build_figures(dump, verdict)["checkpoint"]
    assert spec.figure is not None
    total, *files = spec.figure["data"]
    assert total["y"] == [4096 + 120, 8192 + 120, 8192 + 120]
    assert any("part-00000" in t["name"] for t in files)


def test_figures_for_an_empty_dump_say_what_is_missing(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    _write(root / "manifest.json", {"format": "postmortem-dump", "schema_version": 1,
                                    "targets": [], "rounds": [], "outcomes": []})
    dump = postmortem.load(root)
    figures = build_figures(dump, analyze(dump))
    assert all(s.figure is None and s.note for k, s in figures.items() if k != "timeline")
    page = render_html(dump, analyze(dump))
    assert "no-hang-found" in page


# -- the page ---------------------------------------------------------------------------

def test_page_has_the_verdict_on_top_and_every_section(cluster_dump: Path) -> None:
    dump = postmortem.load(cluster_dump)
    verdict = analyze(dump)
    page = render_html(dump, verdict)
    top = page.index('id="verdict"')
    assert top < page.index('id="cluster"') < page.index('id="threads"')
    assert html.escape(verdict.finding.summary) in page
    assert html.escape(verdict.finding.fix) in page
    for key in ("cluster", "threads", "stacks", "timeline", "checkpoint"):
        assert f'id="fig-{key}"' in page
    assert {f["key"] for f in figure_payload(page)["figures"]} == {
        "cluster", "threads", "stacks", "timeline", "checkpoint"}
    assert 'id="evidence"' in page and 'data-pid="102"' in page
    assert "Saver.save (/usr/lib/python3/site-packages/tensorflow/python/training/saver.py" \
           ":1300)" in page  # raw stacks on demand


def test_page_is_self_contained(cluster_dump: Path) -> None:
    dump = postmortem.load(cluster_dump)
    page = render_html(dump, analyze(dump))
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
    page = render_html(dump, analyze(dump))
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


def test_write_report_never_replaces_a_file_without_force(cluster_dump: Path,
                                                          tmp_path: Path) -> None:
    dump = postmortem.load(cluster_dump)
    verdict = analyze(dump)
    target = tmp_path / "out" / "report.html"
    write_report(dump, verdict, target)
    assert target.read_text().startswith("<!DOCTYPE html>")
    target.write_text("keep me")
    with pytest.raises(OutputExistsError):
        write_report(dump, verdict, target)
    assert target.read_text() == "keep me"
    write_report(dump, verdict, target, force=True)
    assert "keep me" not in target.read_text()
    assert not list(target.parent.glob(".*tmp"))


def test_report_command_names_the_output_after_the_dump(cluster_dump: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    assert cli_main(["report", str(cluster_dump)]) == 0
    expected = default_report_path(cluster_dump)
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
    dump = postmortem.load(sample)
    verdict = analyze(dump)
    page = render_html(dump, verdict)
    assert len(page.encode()) < SIX_MB
    assert f'data-hang-class="{verdict.finding.hang_class.value}"' in page
    payload = figure_payload(page)
    assert payload["figures"], "a sample with no figure at all"
