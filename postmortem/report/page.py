"""The report page: HTML sections around the figures, every dump string escaped.

Text goes through `esc` (html.escape); figure specs travel as JSON in a
`<script type="application/json">` with `<`, `>` and `&` written as \\u escapes, so no
string from a dump can close the script element or start markup. plotly.js is inlined
once; a Content-Security-Policy forbids every network request.
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import shlex
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from typing import Any

from postmortem import __version__
from postmortem.model import (
    Finding,
    Incident,
    LogEvent,
    LogKind,
    Member,
    Process,
    StackSample,
    Thread,
    WaitEdge,
    os_pid,
)
from postmortem.render.text import culprit_text as _culprit_text
from postmortem.report.figures import COLLECTIVE_WORDS, STATUS_COLORS, FigureSpec, drawn_edges

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
MAX_EDGE_ROWS = 200  # wait-for edges listed (the culprit's first); --json has all
# More processes than this: their details travel compressed and open on demand.
PLAIN_PROCESSES = 48
SECTIONS = (
    ("verdict", "Verdict"),
    ("cluster", "Cluster"),
    ("progress", "Progress"),
    ("threads", "Threads"),
    ("stacks", "Stacks"),
    ("timeline", "Timeline"),
    ("checkpoint", "Checkpoint"),
    ("steptimes", "Flight recorder"),
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
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        return "-"
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(seconds)))
    except (OverflowError, OSError, ValueError):
        return "-"


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GiB"  # pragma: no cover - the loop returns


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
    text = _culprit_text(finding.culprit)
    return "none named" if text == "none" else text


def verdict_section(incident: Incident) -> str:
    top = incident.verdict.finding
    no_hang = not top.hang_class.is_hang
    culprit_class = ' class="culprit"' if top.culprit else ""
    others = ", ".join(
        f"{esc(f.hang_class.value)} ({f.confidence:.0%})" for f in incident.verdict.findings[1:]
    )
    warning = ""
    if not incident.dump.complete:
        warning = (
            '<p class="warning">The capture was interrupted: the dump holds only the '
            "rounds it finished.</p>"
        )
    if incident.load_problems:
        warning += (
            f'<p class="warning">{len(incident.load_problems)} file(s) of the dump could not be '
            'used; see <a href="#capture">Capture</a>.</p>'
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
        + risks_block(incident)
        + (
            f'<p class="strategy">Strategy: <b>{esc(incident.strategy.value)}</b> '
            f'<span class="mono">({esc(incident.strategy_evidence)})</span></p>'
            if incident.strategy.value
            else ""
        )
        + "</section>"
    )


def risks_block(incident: Incident) -> str:
    if not incident.risks:
        return ""
    items = "".join(
        f'<li>{esc(r.what)}. <b>Fix:</b> {esc(r.fix)} <span class="mono">({esc(r.source)})'
        "</span></li>"
        for r in incident.risks
    )
    return (
        '<div class="risks" id="risks"><p><b>Risks</b> (not the hang itself):</p>'
        f"<ul>{items}</ul></div>"
    )


def flight_table(incident: Incident) -> str:
    rows = []
    for f in incident.flights:
        save = f.open_save
        largest = f.variables[0] if f.variables else None
        rows.append(
            [
                esc(f"{f.role} (pid {os_pid(f.pid)})"),
                esc(len(f.steps)),
                esc(f"{f.typical_step_s:.3f}s" if f.typical_step_s is not None else "-"),
                esc(fmt_time(f.steps_stopped) if f.steps_stopped is not None else "-"),
                esc(
                    f"began {fmt_time(save.began)}, {save.seconds:.0f}s so far"
                    if save is not None and save.seconds is not None
                    else "-"
                ),
                esc(
                    f"{largest.name} {human_bytes(largest.bytes or 0)} on "
                    f"{largest.role or largest.device}"
                    if largest is not None
                    else "-"
                ),
                esc({True: "sharded", False: "not sharded", None: "-"}[f.saver_sharded]),
                esc(
                    "-"
                    if f.operation_timeout_ms is None
                    else ("none" if f.operation_timeout_ms == 0 else f"{f.operation_timeout_ms} ms")
                ),
                esc(f.source),
            ]
        )
    if not rows:
        return ""
    return table(
        [
            "process",
            "steps recorded",
            "typical step",
            "steps stopped",
            "save not ended",
            "largest variable",
            "saver",
            "session deadline",
            "file",
        ],
        rows,
        ("", "", "", "", "wrap", "wrap", "", "", "mono"),
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


def members_table(members: Sequence[Member], culprit_role: str | None) -> str:
    rows = []
    collectives = any(m.collective for m in members)
    for m in members:
        mark = ' <b class="bad">culprit</b>' if m.role == culprit_role else ""
        row = [
            esc(m.role) + mark,
            esc(m.address or "-"),
            esc(os_pid(m.pid)) if m.pid is not None else "<i>absent</i>",
            "<br>".join(esc(p) for p in m.problems)
            or (f"<i>host not captured: {esc(m.not_captured)}</i>" if m.not_captured else "-"),
        ]
        if collectives:
            row.insert(3, esc(COLLECTIVE_WORDS.get(m.collective, m.collective)) or "-")
        rows.append(row)
    if collectives:
        return table(
            ["member", "address", "pid", "collective", "problems"], rows,
            ("", "mono", "", "", "wrap"),
        )
    return table(["member", "address", "pid", "problems"], rows, ("", "mono", "", "wrap"))


def wait_for_table(edges: Sequence[WaitEdge], culprit_role: str | None = None) -> str:
    shown, total = drawn_edges(edges, culprit_role, MAX_EDGE_ROWS)
    if not total:
        return '<p class="note">No wait-for edges between processes.</p>'
    more = (
        f'<p class="note">{len(shown)} of {total} edges listed, to and from the culprit '
        "first; <code>postmortem analyze DUMP --json</code> lists them all.</p>"
        if len(shown) < total
        else ""
    )
    return "<h3>Wait-for edges</h3>" + table(
        ["waiter", "waits on", "why"],
        ([esc(a), esc(b), esc(why)] for a, b, why in shown),
    ) + more


def progress_table(incident: Incident) -> str:
    rows = [
        [
            esc(p.role),
            esc(p.steps_in_window),
            esc(f"{p.rate:.1f}" if p.rate else "-"),
            esc(p.last_step if p.last_step is not None else "-"),
            esc(f"{p.last_step_age_s:.1f}s" if p.last_step_age_s is not None else "-"),
            esc(f"{p.interval_s:.2f}s" if p.interval_s is not None else "-"),
        ]
        for p in incident.progress
    ]
    rows += [
        [
            esc(f"checkpoints in {c.dir}"),
            esc(c.during_capture),
            "-",
            esc(c.saves),
            esc(f"{c.last_save_age_s:.1f}s" if c.last_save_age_s is not None else "-"),
            esc(f"{c.interval_s:.1f}s" if c.interval_s is not None else "-"),
        ]
        for c in incident.saves
    ]
    if not rows:
        return ""
    return table(
        ["log", "steps in the capture", "steps/s", "last step", "last step age", "usual gap"],
        rows,
        ("wrap", "", "", "", "", ""),
    )


def evidence_section(incident: Incident) -> str:
    parts = ['<section id="evidence"><h2>Evidence behind each finding</h2>']
    for index, f in enumerate(incident.verdict.findings):
        rows = ([esc(e.process or "-"), esc(e.what), esc(e.source)] for e in f.evidence)
        explained = (
            f" &middot; <i>explained by {esc(f.explained_by.value)}</i>" if f.explained_by else ""
        )
        parts.append(
            f'<details{" open" if index == 0 else ""} data-finding="{esc(f.hang_class.value)}">'
            f"<summary>{esc(f.hang_class.value)} ({f.confidence:.0%}): {esc(f.summary)}"
            "</summary>"
            f"<p><b>culprit</b> {esc(culprit_text(f))} &middot; <b>blocking op</b> "
            f"<code>{esc(f.blocking_op or '-')}</code>{explained}</p><p><b>fix</b> {esc(f.fix)}</p>"
            + table(["process", "fact", "source"], rows, ("", "wrap", "mono"))
            + "</details>"
        )
    parts.append("</section>")
    return "".join(parts)


def _thread_head(tid: int, name: str, threads: Mapping[int, Thread]) -> str:
    head = f'Thread {tid} "{name}"'
    info = threads.get(tid)
    if info is not None:
        waits = f", waits on {info.waits_on.value}" if info.waits_on.value else ""
        head += f" [{info.status.value}{waits}]"
        if info.states:
            head += f" kernel {info.states}"
        if info.wchan:
            head += f" wchan {info.wchan}"
    return head


def raw_stacks(
    samples: Sequence[StackSample], threads: Mapping[int, Thread], limit: int = MAX_STACK_TEXT
) -> str:
    """One process's stacks in the last round that saw them, per tool, as py-spy prints
    them; threads with identical stacks (a pool's workers) are printed once."""
    if not samples:
        return ""
    lines: list[str] = []
    by_source: dict[str, list[StackSample]] = defaultdict(list)
    for s in samples:
        by_source[s.source.value].append(s)
    for source, mine in by_source.items():
        last = max(s.round for s in mine)
        lines.append(f"== {source}, round {last} ==")
        stacks: dict[tuple[str, ...], list[str]] = {}
        for s in sorted((s for s in mine if s.round == last), key=lambda s: s.tid):
            body = []
            for f in s.stack:
                where = f"{f.filename}:{f.line}" if f.filename else "?"
                body.append(f"    {f.function} ({where})")
                if f.code:
                    body.append(f"        {f.code.strip()}")
            stacks.setdefault(tuple(body), []).append(_thread_head(s.tid, s.thread_name, threads))
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


def _process_details(
    p: Process, samples: Sequence[StackSample], threads: Mapping[int, Thread], limit: int
) -> str:
    stacks = raw_stacks(samples, threads, limit)
    return table(
        ["", ""],
        [
            ["command line", f"<code>{esc(shlex.join(p.cmdline))}</code>"],
            ["cwd", esc(p.cwd)],
            ["python, tensorflow", esc(f"{p.python}, {p.tensorflow}")],
        ],
        ("", "wrap"),
    ) + (
        f'<pre class="stacks">{esc(stacks)}</pre>'
        if stacks
        else '<p class="empty">no stacks captured</p>'
    )


def packed(texts: Sequence[str]) -> str:
    """A list of strings as base64 of gzip of JSON, for the page to unpack on demand
    (DecompressionStream): thousands of processes' details in little room, since their
    command lines and stacks repeat. Base64 holds no '<', so it cannot end the script."""
    raw = json.dumps(list(texts), separators=(",", ":")).encode("utf-8")
    return base64.b64encode(gzip.compress(raw, compresslevel=6, mtime=0)).decode("ascii")


def processes_section(incident: Incident, order: Sequence[int]) -> str:
    threads: dict[int, dict[int, Thread]] = defaultdict(dict)
    for t in incident.threads:
        threads[t.pid][t.tid] = t
    samples: dict[int, list[StackSample]] = defaultdict(list)
    for s in incident.stack_samples:
        samples[s.pid].append(s)
    by_pid = {p.pid: p for p in incident.processes}
    limit = max(8_000, min(MAX_STACK_TEXT, RAW_STACKS_BUDGET // max(1, len(by_pid))))
    counts = incident.status_counts_by_pid()
    lazy = len(by_pid) > PLAIN_PROCESSES
    parts = [
        '<section id="processes"><h2>Processes</h2><p class="note">Each process '
        "captured, the culprit first, then the members with problems; its kernel state per "
        "round, and its command line and raw stacks on demand.</p>"
        '<p><input type="search" id="pm-process-filter" placeholder="filter: role, pid, '
        'name, state" aria-label="filter the processes"> <span id="pm-process-count"></span></p>'
    ]
    hidden: list[str] = []
    for pid in order:
        p: Process | None = by_pid.get(pid)
        if p is None:
            continue
        summary = ", ".join(
            f"{n} {s.value}"
            for s, n in sorted(counts.get(pid, {}).items(), key=lambda x: x[0].value)
        )
        details = _process_details(p, samples.get(pid, []), threads[pid], limit)
        if lazy:
            body = f'<div class="pm-lazy" data-index="{len(hidden)}">(opening...)</div>'
            hidden.append(details)
        else:
            body = details
        parts.append(
            f'<details data-pid="{pid}"><summary>{esc(p.role)} &middot; pid {os_pid(pid)} &middot; '
            f"{esc(p.comm)} &middot; state {esc(p.states or '-')} &middot; threads: "
            f"{esc(summary or '-')}</summary>{body}</details>"
        )
    if hidden:
        parts.append(
            '<script type="application/octet-stream" id="pm-details">'
            f"{packed(hidden)}</script>"
        )
    parts.append("</section>")
    return "".join(parts)


def logs_section(incident: Incident) -> str:
    rows = [
        [
            esc(s.role),
            esc(s.last_step if s.last_step is not None else "-"),
            esc(s.save_lines),
            esc(s.saves_after_last_step),
            "<br>".join(esc(e) for e in s.errors) or "-",
        ]
        for s in incident.logs
    ]
    overview = table(
        ["log of", "last step", "save lines", "saves after last step", "errors"],
        rows,
        ("", "", "", "", "wrap mono"),
    )
    by_track: dict[str, list[LogEvent]] = defaultdict(list)
    for e in incident.timeline.log_events:
        by_track[e.track].append(e)
    shown: list[LogEvent] = []
    for track_events in by_track.values():
        steps = [e for e in track_events if e.kind is LogKind.STEP]
        keep_steps = {id(e) for e in steps[:3] + steps[-3:]}
        shown += [e for e in track_events if e.kind is not LogKind.STEP or id(e) in keep_steps]
    cut = len(shown) > MAX_LOG_ROWS
    shown = shown[:MAX_LOG_ROWS]
    event_rows = (
        [
            esc(e.kind.value),
            esc(e.track),
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


def capture_section(incident: Incident) -> str:
    d = incident.dump
    info = [
        ["command", f"<code>{esc(shlex.join(d.command))}</code>"],
        ["host", esc(d.host)],
        ["started / ended", esc(f"{fmt_time(d.started_at)} / {fmt_time(d.ended_at)}")],
        ["complete", esc(d.complete)],
        ["rounds", esc(len(incident.timeline.rounds))],
        [
            "processes",
            esc(f"{d.processes_loaded} loaded of {d.processes_in_manifest} in the manifest"),
        ],
        ["options", esc(", ".join(f"{k}={v}" for k, v in d.options))],
        ["postmortem", esc(f"dump by {d.tool_version}, report by {__version__}")],
    ]
    failed_rows = (
        [esc(p.target), esc(p.collector), esc(p.status.value), esc(p.round), esc(p.reason)]
        for p in incident.capture_problems
    )
    problem_rows = ([esc(p.file), esc(p.problem)] for p in incident.load_problems)
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


def assemble(incident: Incident, figures: Mapping[str, FigureSpec], order: Sequence[int]) -> str:
    culprit = incident.verdict.culprit
    culprit_role = culprit.role if culprit else None
    title = f"postmortem: {incident.verdict.hang_class.value} in {incident.dump.name}"
    nav = "".join(f'<a href="#{key}">{esc(label)}</a>' for key, label in SECTIONS)
    body = [
        verdict_section(incident),
        figure_block(
            figures["cluster"],
            "Cluster map",
            "Every process by role and task; arrows point from a process that waits "
            "to the one it waits on. Hover a member for its problems.",
            members_table(incident.members, culprit_role)
            + wait_for_table(incident.wait_for, culprit_role),
        ),
        figure_block(
            figures["progress"],
            "Progress: global step over time",
            "Each process's logged step over time, checkpoint saves marked, the capture's "
            "rounds shaded. Flat lines while saves go on: training is stuck and the saves "
            "are a symptom.",
            progress_table(incident),
        ),
        figure_block(
            figures["threads"],
            "Thread states per process across rounds",
            "Stuck: the same stack in every sample, waiting, and never woke while watched. "
            "Active: it waits in calls that keep returning. Busy: using CPU. Parked: "
            "waiting for work. Stopped: the process is stopped. The number after a kernel "
            "state is how often the thread woke before the next round. Native threads alike "
            "in all the capture shows are grouped.",
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
        figure_block(
            figures["steptimes"],
            "Flight recorder: step times",
            "Recorded inside the job by postmortem.recorder, before and during the hang: how "
            "long each step took, the saves (red: one that never ended), when steps stopped.",
            flight_table(incident),
        ),
        figure_block(
            figures["tracedstep"],
            "Flight recorder: the last traced step",
            "RunMetadata step_stats of the last traced step of each recording process, one "
            "row per device (the ps included): the ops and the RecvTensor transfers. A hung "
            "session.run returns no trace, so this is the step before the hang.",
        ),
        evidence_section(incident),
        processes_section(incident, order),
        logs_section(incident),
        capture_section(incident),
    ]
    payload = {
        "figures": [
            {"key": s.key, "data": s.figure["data"], "layout": s.figure["layout"]}
            for s in figures.values()
            if s.figure is not None
        ],
        "config": PLOTLY_CONFIG,
    }
    d = incident.dump
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="postmortem {esc(__version__)}">'
        f"<title>{esc(title)}</title><style>{asset('page.css')}</style></head><body>"
        f'<header class="top"><h1>{esc(title)}</h1><span class="meta">host '
        f"{esc(d.host)} &middot; captured {esc(fmt_time(d.started_at))}"
        f" &middot; {esc(len(incident.timeline.rounds))} round(s) &middot; "
        f"{esc(len(incident.processes))} process(es) &middot; dump {esc(d.path)}</span></header>"
        f"<nav>{nav}</nav><main>{''.join(body)}</main>"
        f'<script type="application/json" id="pm-figures">{script_json(payload)}</script>'
        f"<script>{plotly_js()}</script><script>{asset('page.js')}</script></body></html>\n"
    )


__all__ = ["STATUS_COLORS", "assemble", "esc", "script_json"]
