"""The report page: HTML sections around the figures, every dump string escaped.

Text goes through `esc` (html.escape); figure specs travel as JSON in a
`<script type="application/json">` with `<`, `>` and `&` written as \\u escapes, so no
string from a dump can close the script element or start markup. plotly.js is inlined
once; a Content-Security-Policy forbids every network request.
"""

from __future__ import annotations

import html
import json
import shlex
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

import pandas as pd

from postmortem import __version__
from postmortem.analysis import Finding, Verdict
from postmortem.exports.common import LogEvent, log_track, records
from postmortem.loading import Dump
from postmortem.report.figures import STATUS_COLORS, FigureSpec

CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; font-src data:; connect-src 'none'; form-action 'none'; "
    "base-uri 'none'"
)
PLOTLY_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "scrollZoom": False,
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}
MAX_STACK_TEXT = 60_000  # characters of raw stacks per process...
RAW_STACKS_BUDGET = 350_000  # ...and in all: plotly.js already takes 4.8 MB of the 6
MAX_LOG_ROWS = 300
SECTIONS = (
    ("verdict", "Verdict"),
    ("cluster", "Cluster"),
    ("threads", "Threads"),
    ("stacks", "Stacks"),
    ("timeline", "Timeline"),
    ("checkpoint", "Checkpoint"),
    ("evidence", "Evidence"),
    ("processes", "Processes"),
    ("logs", "Logs"),
    ("capture", "Capture"),
)


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def script_json(value: Any) -> str:
    """JSON that is inert inside a <script> element: no '<', '>' or '&' survive."""
    text = json.dumps(value, separators=(",", ":"), allow_nan=False, default=str)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def asset(name: str) -> str:
    return resources.files("postmortem.report").joinpath(name).read_text(encoding="utf-8")


def plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    text = str(get_plotlyjs())
    # An inline script ends at the first "</script": plotly.js has none, keep it that way.
    return text.replace("</script", "<\\/script")


def fmt_time(seconds: object) -> str:
    if not isinstance(seconds, (int, float)) or pd.isna(seconds):
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(seconds)))


def table(
    headers: Sequence[str], rows: Iterable[Sequence[str]], classes: Sequence[str] = ()
) -> str:
    """rows hold already-escaped HTML cells."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = "".join(
            f'<td class="{classes[i]}">{cell}</td>'
            if i < len(classes) and classes[i]
            else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        body.append(f"<tr>{cells}</tr>")
    if not body:
        return '<p class="empty">none</p>'
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


# -- sections --------------------------------------------------------------------------


def culprit_text(finding: Finding) -> str:
    c = finding.culprit
    if c is None:
        return "none named"
    pid = f"pid {c.pid}" if c.pid is not None else "absent from the dump"
    return f"{c.role} ({pid}, host {c.host})" + (f": {c.state}" if c.state else "")


def verdict_section(dump: Dump, verdict: Verdict) -> str:
    top = verdict.finding
    no_hang = top.hang_class.value in ("no-hang-found", "save-progressing")
    culprit_class = ' class="culprit"' if top.culprit else ""
    others = ", ".join(
        f"{esc(f.hang_class.value)} ({f.confidence:.0%})" for f in verdict.findings[1:]
    )
    warning = ""
    if not dump.manifest.get("complete", True):
        warning = (
            '<p class="warning">The capture was interrupted: the dump holds only the '
            "rounds it finished.</p>"
        )
    return (
        f'<section id="verdict" class="verdict{" no-hang" if no_hang else ""}">'
        f'<p class="class" data-hang-class="{esc(top.hang_class.value)}">'
        f'{esc(top.hang_class.value)}<span class="confidence">confidence '
        f"{top.confidence:.0%}</span></p>"
        f'<p class="summary">{esc(top.summary)}</p>{warning}<dl>'
        f"<dt>culprit</dt><dd{culprit_class}>{esc(culprit_text(top))}</dd>"
        f"<dt>blocking op</dt><dd><code>{esc(top.blocking_op or '-')}</code></dd>"
        f'<dt>fix</dt><dd class="fix">{esc(top.fix)}</dd></dl>'
        + (
            f'<p class="others">Other findings: {others}. See <a href="#evidence">Evidence</a>.</p>'
            if others
            else ""
        )
        + "</section>"
    )


def figure_block(spec: FigureSpec, title: str, intro: str, extra: str = "") -> str:
    chips = ""
    if spec.legend:
        chips = (
            '<p class="chips">'
            + "".join(
                f'<span><i style="background:{esc(color)}"></i>{esc(label)}</span>'
                for label, color in spec.legend
            )
            + "</p>"
        )
    if spec.figure is None:
        body = f'<p class="empty" data-figure-absent="{esc(spec.key)}">{esc(spec.note)}</p>'
    else:
        body = (
            f'<div class="figure" id="fig-{esc(spec.key)}" '
            f'data-figure="{esc(spec.key)}"></div>'
            + (f'<p class="note">{esc(spec.note)}</p>' if spec.note else "")
        )
    return (
        f'<section id="{esc(spec.key)}"><h2>{esc(title)}</h2><p class="note">'
        f"{esc(intro)}</p>{chips}{body}{extra}</section>"
    )


def members_table(members: Sequence[Mapping[str, Any]], culprit_role: str | None) -> str:
    rows = []
    for m in members:
        role = str(m.get("role"))
        mark = ' <b class="bad">culprit</b>' if role == culprit_role else ""
        pid = m.get("pid")
        rows.append(
            [
                esc(role) + mark,
                esc(m.get("address") or "-"),
                esc(pid) if pid is not None else "<i>absent</i>",
                "<br>".join(esc(p) for p in m.get("problems") or []) or "-",
            ]
        )
    return table(["member", "address", "pid", "problems"], rows, ("", "mono", "", "wrap"))


def wait_for_table(edges: Sequence[Mapping[str, Any]]) -> str:
    if not edges:
        return '<p class="note">No wait-for edges between processes.</p>'
    return "<h3>Wait-for edges</h3>" + table(
        ["waiter", "waits on", "why"],
        ([esc(e.get("from")), esc(e.get("to")), esc(e.get("why"))] for e in edges),
    )


def evidence_section(verdict: Verdict) -> str:
    parts = ['<section id="evidence"><h2>Evidence behind each finding</h2>']
    for index, f in enumerate(verdict.findings):
        rows = ([esc(e.process or "-"), esc(e.what), esc(e.source)] for e in f.evidence)
        parts.append(
            f'<details{" open" if index == 0 else ""} data-finding="{esc(f.hang_class.value)}">'
            f"<summary>{esc(f.hang_class.value)} ({f.confidence:.0%}): {esc(f.summary)}"
            "</summary>"
            f"<p><b>culprit</b> {esc(culprit_text(f))} &middot; <b>blocking op</b> "
            f"<code>{esc(f.blocking_op or '-')}</code></p><p><b>fix</b> {esc(f.fix)}</p>"
            + table(["process", "fact", "source"], rows, ("", "wrap", "mono"))
            + "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _thread_head(
    pid: int, tid: int, name: str, statuses: Mapping[tuple[int, int], Mapping[str, Any]]
) -> str:
    info = statuses.get((pid, tid), {})
    head = f'Thread {tid} "{name}"'
    if info:
        head += (
            f" [{info.get('status')}"
            + (f", waits on {info['waits_on']}" if info.get("waits_on") else "")
            + "]"
        )
        if info.get("states"):
            head += f" kernel {info['states']}"
        if info.get("wchan"):
            head += f" wchan {info['wchan']}"
    return head


def raw_stacks(
    dump: Dump,
    pid: int,
    statuses: Mapping[tuple[int, int], Mapping[str, Any]],
    limit: int = MAX_STACK_TEXT,
) -> str:
    """Every thread's stacks in the last round that saw it, as py-spy dump prints them;
    threads with identical stacks (a pool's workers) are printed once."""
    frames = dump.frames[dump.frames["pid"] == pid] if not dump.frames.empty else dump.frames
    if frames.empty:
        return ""
    lines: list[str] = []
    for source, by_source in frames.groupby("source", sort=False):
        last = int(by_source["round"].max())
        lines.append(f"== {source}, round {last} ==")
        stacks: dict[tuple[str, ...], list[str]] = {}
        tid: Any
        for tid, grp in by_source[by_source["round"] == last].groupby("tid", sort=True):
            body = []
            for r in records(grp.sort_values("depth")):
                where = f"{r.filename}:{r.line}" if r.filename else "?"
                body.append(f"    {r.function} ({where})")
                if r.code:
                    body.append(f"        {str(r.code).strip()}")
            head = _thread_head(pid, int(tid), str(grp["thread_name"].iloc[0]), statuses)
            stacks.setdefault(tuple(body), []).append(head)
        for body_lines, heads in stacks.items():
            if len(heads) > 1:
                lines.append(f"{len(heads)} threads with this stack:")
                lines += [f"  {h}" for h in heads[:20]]
                if len(heads) > 20:
                    lines.append(f"  ... and {len(heads) - 20} more")
            else:
                lines.append(heads[0])
            lines += list(body_lines)
            lines.append("")
    text = "\n".join(lines)
    if len(text) > limit:
        text = text[:limit] + "\n... (cut here to keep the report small; the dump has it all)"
    return text


def processes_section(dump: Dump, verdict: Verdict, roles: Mapping[int, str]) -> str:
    statuses = {(int(t["pid"]), int(t["tid"])): t for t in verdict.facts.get("threads", [])}
    status_by_pid: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for t in verdict.facts.get("threads", []):
        status_by_pid[int(t["pid"])][str(t.get("status"))] += 1
    states: dict[int, str] = defaultdict(str)
    if not dump.process_rounds.empty:
        for r in records(dump.process_rounds.sort_values("round")):
            states[int(r.pid)] += str(r.state or "?")
    limit = max(8_000, min(MAX_STACK_TEXT, RAW_STACKS_BUDGET // max(1, len(dump.processes))))
    parts = [
        '<section id="processes"><h2>Processes</h2><p class="note">Each process '
        "captured, its kernel state per round, and its raw stacks on demand.</p>"
    ]
    for r in records(dump.processes):
        pid = int(r.pid)
        role = roles.get(pid, f"pid:{pid}")
        counts = status_by_pid.get(pid, {})
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items(), key=lambda x: x[0]))
        stacks = raw_stacks(dump, pid, statuses, limit)
        parts.append(
            f'<details data-pid="{pid}"><summary>{esc(role)} &middot; pid {pid} &middot; '
            f"{esc(r.comm)} &middot; state {esc(states.get(pid) or '-')} &middot; threads: "
            f"{esc(summary or '-')}</summary>"
            + table(
                ["", ""],
                [
                    ["command line", f"<code>{esc(r.cmdline)}</code>"],
                    ["cwd", esc(r.cwd)],
                    ["python, tensorflow", esc(f"{r.python}, {r.tensorflow}")],
                ],
                ("", "wrap"),
            )
            + (
                f'<pre class="stacks">{esc(stacks)}</pre>'
                if stacks
                else '<p class="empty">no stacks captured</p>'
            )
            + "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def logs_section(
    events: Sequence[LogEvent], labels: Mapping[int, str], summary: Mapping[str, Mapping[str, Any]]
) -> str:
    rows = []
    for role, s in summary.items():
        rows.append(
            [
                esc(role),
                esc(s.get("last_step") if s.get("last_step") is not None else "-"),
                esc(s.get("save_lines")),
                esc(s.get("saves_after_last_step")),
                "<br>".join(esc(e) for e in s.get("errors") or []) or "-",
            ]
        )
    overview = table(
        ["log of", "last step", "save lines", "saves after last step", "errors"],
        rows,
        ("", "", "", "", "wrap mono"),
    )
    by_track: dict[str, list[LogEvent]] = defaultdict(list)
    for e in events:
        by_track[log_track(e, labels)].append(e)
    shown: list[LogEvent] = []
    for track_events in by_track.values():
        steps = [e for e in track_events if e.kind == "step"]
        keep_steps = {id(e) for e in steps[:3] + steps[-3:]}
        shown += [e for e in track_events if e.kind != "step" or id(e) in keep_steps]
    cut = len(shown) > MAX_LOG_ROWS
    shown = shown[:MAX_LOG_ROWS]
    event_rows = (
        [
            esc(e.kind),
            esc(log_track(e, labels)),
            esc(e.line_no),
            esc(time.strftime("%H:%M:%S", time.localtime(e.time)) if e.time else "-"),
            esc(e.text),
        ]
        for e in shown
    )
    return (
        '<section id="logs"><h2>Logs</h2>'
        + overview
        + "<h3>Log events (errors, waits, saves; first and last step lines)</h3>"
        + table(["kind", "log", "line", "time", "text"], event_rows, ("", "", "", "", "wrap mono"))
        + ('<p class="note">More events are in the dump.</p>' if cut else "")
        + "</section>"
    )


def capture_section(dump: Dump) -> str:
    m = dump.manifest
    options = m.get("options") or {}
    command = m.get("command")
    if isinstance(command, list):
        command = shlex.join(str(c) for c in command)
    info = [
        ["command", f"<code>{esc(command)}</code>"],
        ["host", esc(m.get("host"))],
        [
            "started / ended",
            esc(f"{fmt_time(m.get('started_at'))} / {fmt_time(m.get('ended_at'))}"),
        ],
        ["complete", esc(m.get("complete"))],
        ["rounds", esc(len(m.get("rounds") or []))],
        ["options", esc(", ".join(f"{k}={v}" for k, v in options.items()))],
        ["postmortem", esc(f"dump by {m.get('tool_version')}, report by {__version__}")],
    ]
    outcomes = dump.outcomes
    failed = outcomes[outcomes["status"] != "ok"] if not outcomes.empty else outcomes
    failed_rows = (
        [esc(r.target), esc(r.collector), esc(r.status), esc(r.round), esc(r.reason)]
        for r in records(failed)
    )
    problem_rows = ([esc(r.file), esc(r.problem)] for r in records(dump.problems))
    return (
        '<section id="capture"><h2>Capture</h2>'
        + table(["", ""], info, ("", "wrap"))
        + "<h3>Collectors that did not succeed</h3>"
        + table(
            ["target", "collector", "status", "round", "reason"],
            failed_rows,
            ("mono", "", "", "", "wrap"),
        )
        + "<h3>Files the loader could not read</h3>"
        + table(["file", "problem"], problem_rows, ("mono", "wrap"))
        + "</section>"
    )


def assemble(
    dump: Dump,
    verdict: Verdict,
    figures: Mapping[str, FigureSpec],
    events: Sequence[LogEvent],
    labels: Mapping[int, str],
    roles: Mapping[int, str],
) -> str:
    facts = verdict.facts
    culprit_role = verdict.finding.culprit.role if verdict.finding.culprit else None
    title = f"postmortem: {verdict.finding.hang_class.value} in {dump.path.name}"
    nav = "".join(f'<a href="#{key}">{esc(label)}</a>' for key, label in SECTIONS)
    body = [
        verdict_section(dump, verdict),
        figure_block(
            figures["cluster"],
            "Cluster map",
            "Every process by role and task; arrows point from a process that waits "
            "to the one it waits on. Hover a member for its problems.",
            members_table(facts.get("members", []), culprit_role)
            + wait_for_table(facts.get("wait_for", [])),
        ),
        figure_block(
            figures["threads"],
            "Thread states per process across rounds",
            "Stuck: same stack every round, no CPU, waiting on something. Busy: using "
            "CPU. Parked: waiting for work. Stopped: the process is stopped. Native "
            "threads with the same name and states are grouped.",
        ),
        figure_block(
            figures["stacks"],
            "Merged stack tree",
            "All threads' stacks merged from the outermost frame; width is the number "
            "of threads. Click a frame to expand it, click the root to go back; hover "
            "shows the processes that share a frame.",
        ),
        figure_block(
            figures["timeline"],
            "Timeline",
            "Capture rounds, TF profiler events (when a --tf-server was traced) and "
            "log events (saves, steps, errors). Drag to zoom, double-click to reset.",
        ),
        figure_block(
            figures["checkpoint"],
            "Checkpoint sizes over rounds",
            "Total and per-file sizes in each watched checkpoint directory.",
        ),
        evidence_section(verdict),
        processes_section(dump, verdict, roles),
        logs_section(events, labels, facts.get("logs", {})),
        capture_section(dump),
    ]
    payload = {
        "figures": [
            {"key": s.key, "data": s.figure["data"], "layout": s.figure["layout"]}
            for s in figures.values()
            if s.figure is not None
        ],
        "config": PLOTLY_CONFIG,
    }
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="postmortem {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{asset('page.css')}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><span class="meta">host '
        f"{esc(dump.host)} &middot; captured {esc(fmt_time(dump.manifest.get('started_at')))}"
        f" &middot; {esc(len(dump.manifest.get('rounds') or []))} round(s) &middot; "
        f"{esc(len(dump.processes))} process(es) &middot; dump {esc(dump.path)}</span></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main>"
        f'<script type="application/json" id="pm-figures">{script_json(payload)}</script>'
        f"<script>{plotly_js()}</script><script>{asset('page.js')}</script></body></html>\n"
    )


__all__ = ["STATUS_COLORS", "assemble", "esc", "script_json"]
