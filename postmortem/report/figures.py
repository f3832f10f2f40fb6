"""Figure data for the HTML report: pure functions from loaded data and verdict facts to
plotly figure specs (plain dicts, JSON-ready).

Nothing here judges anything: statuses, problems, culprits and wait-for edges come from
the verdict (`verdict.facts`, `verdict.finding`); the frames, states, sizes and events
come from the loaded dump. Every string that came from a dump goes through `ptext`,
because plotly renders a subset of HTML in labels and hover text.
"""

from __future__ import annotations

import html
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pandas as pd

from postmortem.exports.common import LogEvent, StackSample, log_track, records, round_spans
from postmortem.loading import Dump

Figure = dict[str, Any]

FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13}
STATUS_ORDER = ("stuck", "busy", "stopped", "parked", "unknown")
STATUS_COLORS = {
    "stuck": "#d62728",
    "busy": "#ff9f1c",
    "stopped": "#7b3fb3",
    "parked": "#c9d3df",
    "unknown": "#eeeeee",
}
LOG_STYLE = {
    "error": ("x", "#d62728"),
    "waiting": ("triangle-up", "#ff7f0e"),
    "save": ("diamond", "#1f77b4"),
    "step": ("circle", "#8c8c8c"),
}
MAX_THREAD_ROWS = 300
MAX_TREE_NODES = 2500
MAX_TF_BARS = 800
MAX_LOG_MARKS = 1500
JOB_ORDER = ("chief", "master", "ps", "worker", "evaluator")


def ptext(value: object, limit: int = 0) -> str:
    """A dump string made safe and literal for plotly's HTML-like text rendering."""
    text = str(value)
    if limit and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return html.escape(text, quote=False)


def local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S.%f")


def base_layout(title: str, height: int) -> dict[str, Any]:
    return {
        "title": {"text": title, "x": 0, "xanchor": "left", "font": {"size": 15}},
        "height": height,
        "font": FONT,
        "margin": {"l": 60, "r": 20, "t": 40, "b": 40},
        "paper_bgcolor": "#ffffff",
        "plot_bgcolor": "#ffffff",
        "hoverlabel": {"align": "left"},
    }


@dataclass
class FigureSpec:
    """A figure for the page, or the reason there is none."""

    key: str
    figure: Figure | None
    note: str = ""  # shown under the figure (truncation) or in its place (no data)
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, color) chips


# -- cluster map ----------------------------------------------------------------------


def _member_category(member: Mapping[str, Any], culprit_role: str | None) -> str:
    if culprit_role is not None and member.get("role") == culprit_role:
        return "culprit"
    if not member.get("captured", member.get("pid") is not None):
        return "absent"
    return "problems" if member.get("problems") else "healthy"


CATEGORY_STYLE = {
    "culprit": ("culprit", "square", "#d62728"),
    "problems": ("has problems", "square", "#ff9f1c"),
    "healthy": ("no problem seen", "square", "#2ca02c"),
    "absent": ("absent from the dump", "square-open", "#7f7f7f"),
}


def cluster_positions(members: Sequence[Mapping[str, Any]]) -> dict[str, tuple[float, float]]:
    """role -> (x, y): one column per job (chief, ps, worker...), one row per task."""
    jobs = sorted(
        {str(m.get("job", "")) for m in members},
        key=lambda j: (JOB_ORDER.index(j) if j in JOB_ORDER else len(JOB_ORDER), j),
    )
    positions: dict[str, tuple[float, float]] = {}
    for column, job in enumerate(jobs):
        mine = sorted(
            (m for m in members if str(m.get("job", "")) == job),
            key=lambda m: (int(m.get("task") or 0), str(m.get("role"))),
        )
        for row, m in enumerate(mine):
            positions[str(m["role"])] = (float(column), -float(row))
    return positions


def cluster_map_figure(
    members: Sequence[Mapping[str, Any]],
    wait_for: Sequence[Mapping[str, Any]],
    threads: Sequence[Mapping[str, Any]],
    culprit_role: str | None,
) -> FigureSpec:
    if not members:
        return FigureSpec("cluster", None, "The dump names no cluster members.")
    positions = cluster_positions(members)
    status_counts: dict[str, Counter[str]] = defaultdict(Counter)
    for t in threads:
        status_counts[str(t.get("role"))][str(t.get("status"))] += 1
    traces = []
    for category, (name, symbol, color) in CATEGORY_STYLE.items():
        chosen = [m for m in members if _member_category(m, culprit_role) == category]
        if not chosen:
            continue
        xs, ys, texts, hovers = [], [], [], []
        for m in chosen:
            role = str(m["role"])
            x, y = positions[role]
            xs.append(x)
            ys.append(y)
            pid = m.get("pid")
            texts.append(
                f"<b>{ptext(role)}</b><br>" + (f"pid {pid}" if pid is not None else "absent")
            )
            lines = [
                f"<b>{ptext(role)}</b>",
                f"address: {ptext(m.get('address') or '-')}",
                f"pid: {pid if pid is not None else 'not in the dump'}",
            ]
            counts = status_counts.get(role)
            if counts:
                lines.append(
                    "threads: "
                    + ", ".join(f"{counts[s]} {s}" for s in STATUS_ORDER if counts.get(s))
                )
            lines += [f"problem: {ptext(p, 160)}" for p in m.get("problems") or []]
            hovers.append("<br>".join(lines))
        traces.append(
            {
                "type": "scatter",
                "mode": "markers+text",
                "name": name,
                "x": xs,
                "y": ys,
                "text": texts,
                "textposition": "bottom center",
                "hovertext": hovers,
                "hoverinfo": "text",
                "marker": {
                    "symbol": symbol,
                    "size": 34,
                    "color": color,
                    "line": {
                        "width": 4 if category == "culprit" else 1.5,
                        "color": "#7a0000" if category == "culprit" else "#333",
                    },
                },
            }
        )
    annotations = []
    for edge in wait_for:
        a, b = str(edge.get("from")), str(edge.get("to"))
        if a not in positions or b not in positions or a == b:
            continue
        (ax, ay), (bx, by) = positions[a], positions[b]
        annotations.append(
            {
                "x": bx,
                "y": by,
                "ax": ax,
                "ay": ay,
                "xref": "x",
                "yref": "y",
                "axref": "x",
                "ayref": "y",
                "showarrow": True,
                "arrowhead": 3,
                "arrowsize": 1.3,
                "arrowwidth": 2,
                "arrowcolor": "#d62728" if b == culprit_role else "#555",
                "standoff": 22,
                "startstandoff": 22,
                "text": "",
                "hovertext": ptext(f"{a} waits on {b}: {edge.get('why', '')}", 200),
            }
        )
    jobs = sorted({int(x) for x, _ in positions.values()})
    column_names: dict[int, str] = {}
    for m in members:
        column_names[int(positions[str(m["role"])][0])] = str(m.get("job", ""))
    rows = max(1, len({y for _, y in positions.values()}))
    layout = base_layout("Cluster map: who waits on whom", max(260, 80 * rows + 130))
    layout.update(
        {
            "showlegend": True,
            "legend": {"orientation": "h", "y": -0.05},
            "xaxis": {
                "tickvals": jobs,
                "ticktext": [ptext(column_names[j]) for j in jobs],
                "side": "top",
                "range": [min(jobs) - 0.6, max(jobs) + 0.6],
                "showgrid": False,
                "zeroline": False,
            },
            "yaxis": {"visible": False, "range": [-rows + 0.4, 0.6]},
            "annotations": annotations,
            "hovermode": "closest",
            "margin": {"l": 20, "r": 20, "t": 70, "b": 30},
        }
    )
    return FigureSpec("cluster", {"data": traces, "layout": layout})


# -- thread states ----------------------------------------------------------------------


@dataclass
class ThreadRow:
    label: str
    status: str
    pid: int
    role: str
    count: int
    states: dict[int, str]  # round -> kernel state letter
    hover: str


def _name_family(name: str) -> str:
    return name.rstrip("0123456789-_/ ") or name


def thread_rows(
    dump: Dump, threads: Sequence[Mapping[str, Any]], process_order: Sequence[int]
) -> list[ThreadRow]:
    """One row per Python (or stuck / busy) thread; other threads grouped by name family."""
    kernel: dict[tuple[int, int], dict[int, str]] = defaultdict(dict)
    for r in records(dump.threads):
        kernel[(int(r.pid), int(r.tid))][int(r.round)] = str(r.state)
    python = {(int(p), int(t)) for p, t in dump.py_threads[["pid", "tid"]].itertuples(index=False)}
    rank = {pid: i for i, pid in enumerate(process_order)}
    rows: list[ThreadRow] = []
    groups: dict[tuple[int, str, str, tuple[tuple[int, str], ...]], list[Mapping[str, Any]]] = {}
    for t in threads:
        pid, tid = int(t["pid"]), int(t["tid"])
        status = str(t.get("status") or "unknown")
        states = kernel.get((pid, tid), {})
        if (pid, tid) in python or status in ("stuck", "busy"):
            lines = [
                f"<b>{ptext(t.get('name'))}</b> (tid {tid}) in {ptext(t.get('role'))}",
                f"status: <b>{ptext(status)}</b>"
                + (f", waits on {ptext(t['waits_on'])}" if t.get("waits_on") else ""),
                f"CPU {t.get('cpu_seconds', 0)} s, wchan {ptext(t.get('wchan') or '-')}",
            ]
            if t.get("stack"):
                lines.append("stack: " + ptext(t["stack"], 200).replace(" &lt;- ", "<br>  &lt;- "))
            rows.append(
                ThreadRow(
                    f"{ptext(t.get('role'))} \u00b7 {ptext(t.get('name'), 40)} #{tid}",
                    status,
                    pid,
                    str(t.get("role")),
                    1,
                    states,
                    "<br>".join(lines),
                )
            )
        else:
            key = (
                pid,
                _name_family(str(t.get("name") or "")),
                status,
                tuple(sorted(states.items())),
            )
            groups.setdefault(key, []).append(t)
    for (pid, family, status, state_items), members in groups.items():
        role = str(members[0].get("role"))
        first = members[0]
        if len(members) == 1:
            label = f"{ptext(role)} \u00b7 {ptext(first.get('name'), 40)} #{first['tid']}"
        else:
            label = f"{ptext(role)} \u00b7 {ptext(family, 40)}* \u00d7{len(members)}"
        hover = (
            f"<b>{len(members)} native thread(s)</b> {ptext(family)}* in {ptext(role)}<br>"
            f"status: <b>{ptext(status)}</b>, wchan {ptext(first.get('wchan') or '-')}<br>"
            "tids: "
            + ptext(
                ", ".join(str(m["tid"]) for m in members[:12])
                + (" ..." if len(members) > 12 else "")
            )
        )
        rows.append(ThreadRow(label, status, pid, role, len(members), dict(state_items), hover))
    rows.sort(
        key=lambda r: (
            rank.get(r.pid, len(rank)),
            STATUS_ORDER.index(r.status) if r.status in STATUS_ORDER else 9,
            r.label,
        )
    )
    return rows


def thread_states_figure(
    dump: Dump, threads: Sequence[Mapping[str, Any]], process_order: Sequence[int]
) -> FigureSpec:
    legend = [(s, STATUS_COLORS[s]) for s in STATUS_ORDER[:4]]
    rows = thread_rows(dump, threads, process_order)
    if not rows:
        return FigureSpec("threads", None, "The dump holds no thread states.", legend)
    note = ""
    if len(rows) > MAX_THREAD_ROWS:
        note = f"Showing the first {MAX_THREAD_ROWS} of {len(rows)} rows (stuck and busy first)."
        rows = rows[:MAX_THREAD_ROWS]
    rounds = sorted({int(r) for r in dump.rounds["index"]}) or sorted(
        {rnd for row in rows for rnd in row.states}
    )
    code = {s: i for i, s in enumerate(STATUS_ORDER)}
    z, text, hover = [], [], []
    for row in rows:
        z.append([code.get(row.status, 4) if rnd in row.states else None for rnd in rounds])
        text.append([ptext(row.states.get(rnd, "")) for rnd in rounds])
        hover.append(
            [
                f"{row.hover}<br>round {rnd}: kernel state {ptext(row.states.get(rnd, 'not read'))}"
                for rnd in rounds
            ]
        )
    n = len(STATUS_ORDER)
    colorscale = []
    for i, status in enumerate(STATUS_ORDER):
        colorscale += [[i / n, STATUS_COLORS[status]], [(i + 1) / n, STATUS_COLORS[status]]]
    trace = {
        "type": "heatmap",
        "z": z,
        "x": [f"round {r}" for r in rounds],
        "y": [row.label for row in rows],
        "text": text,
        "texttemplate": "%{text}",
        "hovertext": hover,
        "hoverinfo": "text",
        "colorscale": colorscale,
        "zmin": -0.5,
        "zmax": n - 0.5,
        "showscale": False,
        "xgap": 2,
        "ygap": 2,
    }
    layout = base_layout(
        "Threads across rounds (colour: status; letter: kernel state)",
        min(120 + 24 * len(rows), 7300),
    )
    layout.update(
        {
            "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"},
            "xaxis": {"side": "top", "type": "category"},
            "margin": {"l": 20, "r": 20, "t": 70, "b": 20},
        }
    )
    return FigureSpec("threads", {"data": [trace], "layout": layout}, note, legend)


# -- merged stack tree -----------------------------------------------------------------


def last_samples(samples: Iterable[StackSample]) -> list[StackSample]:
    """Each thread's stack in the last round that saw it."""
    latest: dict[tuple[int, int], StackSample] = {}
    for s in samples:
        key = (s.pid, s.tid)
        if key not in latest or s.round > latest[key].round:
            latest[key] = s
    return [latest[k] for k in sorted(latest)]


@dataclass
class TreeNode:
    label: str
    file: str
    depth: int
    children: dict[tuple[str, str, int], TreeNode] = field(default_factory=dict)
    processes: set[int] = field(default_factory=set)
    threads: list[str] = field(default_factory=list)
    status: str = "unknown"  # the most telling status of the threads through it


def _worse(a: str, b: str) -> str:
    rank = {s: i for i, s in enumerate(STATUS_ORDER)}
    return a if rank.get(a, 9) <= rank.get(b, 9) else b


def stack_tree(
    samples: Sequence[StackSample],
    labels: Mapping[int, str],
    statuses: Mapping[tuple[int, int], str] | None = None,
) -> TreeNode:
    root = TreeNode(f"all threads ({len(samples)})", "", 0)
    for s in samples:
        status = (statuses or {}).get((s.pid, s.tid), "unknown")
        node = root
        node.processes.add(s.pid)
        node.threads.append(f"{s.thread_name} ({labels.get(s.pid, s.pid)})")
        for frame in s.frames:
            key = (frame.function, frame.filename, frame.line)
            child = node.children.get(key)
            if child is None:
                child = TreeNode(frame.label, frame.filename, node.depth + 1)
                node.children[key] = child
            child.processes.add(s.pid)
            child.threads.append(f"{s.thread_name} ({labels.get(s.pid, s.pid)})")
            child.status = _worse(child.status, status)
            node = child
    return root


TREE_COLORS = {
    "stuck": "#e57373",
    "busy": "#ffb74d",
    "stopped": "#b39ddb",
    "parked": "#b0c4de",
    "unknown": "#dddddd",
}


def stack_tree_figure(
    samples: Sequence[StackSample],
    labels: Mapping[int, str],
    source: str,
    culprit_pid: int | None = None,
    statuses: Mapping[tuple[int, int], str] | None = None,
) -> FigureSpec:
    """Icicle of the merged stacks; a frame's colour is the worst status through it."""
    chosen = last_samples(samples)
    legend = [(s, TREE_COLORS[s]) for s in STATUS_ORDER[:4]]
    if not chosen:
        return FigureSpec("stacks", None, "The dump holds no stacks.", legend)
    root = stack_tree(chosen, labels, statuses)
    ids: list[str] = []
    parents: list[str] = []
    names: list[str] = []
    values: list[int] = []
    custom: list[list[str]] = []
    colors: list[str] = []
    queue: list[tuple[TreeNode, str]] = [(root, "")]
    truncated = 0
    while queue:
        node, parent = queue.pop(0)
        if len(ids) >= MAX_TREE_NODES:
            truncated += 1
            continue
        node_id = f"n{len(ids)}"
        ids.append(node_id)
        parents.append(parent)
        names.append(ptext(node.label, 90))
        values.append(len(node.threads))
        colors.append(TREE_COLORS.get(node.status, TREE_COLORS["unknown"]) if parent else "#f4f6f8")
        procs = sorted(node.processes)
        culprit_mark = " (culprit)" if culprit_pid in node.processes else ""
        custom.append(
            [
                ptext(
                    ", ".join(labels.get(p, str(p)) for p in procs[:8])
                    + (f" and {len(procs) - 8} more" if len(procs) > 8 else "")
                )
                + culprit_mark,
                ptext("; ".join(node.threads[:6]) + (" ..." if len(node.threads) > 6 else ""), 400),
                ptext(node.file, 160),
                node.status if parent else "",
            ]
        )
        queue.extend((child, node_id) for child in node.children.values())
    trace = {
        "type": "icicle",
        "ids": ids,
        "parents": parents,
        "labels": names,
        "values": values,
        "branchvalues": "total",
        "customdata": custom,
        "maxdepth": 7,
        "hovertemplate": "<b>%{label}</b><br>%{value} thread(s), %{customdata[3]}"
        "<br>file: %{customdata[2]}"
        "<br>processes: %{customdata[0]}<br>threads: %{customdata[1]}"
        "<extra></extra>",
        "tiling": {"orientation": "h"},
        "marker": {"colors": colors, "line": {"width": 1, "color": "#ffffff"}},
        "textfont": {"size": 12, "color": "#1d2733"},
    }
    layout = base_layout(
        f"Merged stacks, last round of every thread ({source}); click a frame to expand it", 640
    )
    layout["margin"] = {"l": 10, "r": 10, "t": 40, "b": 10}
    note = (
        f"{truncated} deeper frames were left out to keep the report small; the "
        "speedscope export has them all."
        if truncated
        else ""
    )
    return FigureSpec("stacks", {"data": [trace], "layout": layout}, note, legend)


# -- timeline ---------------------------------------------------------------------------


def _tf_kind(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ("save", "restore", "mergev2", "checkpoint")):
        return "checkpoint op"
    if any(k in lowered for k in ("_send", "_recv", "recvtensor", "rendezvous", "grpc")):
        return "transfer"
    return "TF op"


TF_COLORS = {
    "checkpoint op": "#d62728",
    "transfer": "#ff9f1c",
    "TF op": "#4e79a7",
    "capture round": "#b8c4d6",
}


def tf_seconds(start_ns: float, capture_start: float) -> float:
    """Profiler times are Unix nanoseconds; a small value is an offset into the capture."""
    return start_ns / 1e9 if start_ns > 1e17 else capture_start + start_ns / 1e9


def timeline_figure(
    dump: Dump, events: Sequence[LogEvent], labels: Mapping[int, str]
) -> FigureSpec:
    capture_start = float(dump.manifest.get("started_at") or 0)
    bars: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))

    def add_bar(kind: str, track: str, start: float, seconds: float, hover: str) -> None:
        bar = bars[kind]
        bar["y"].append(track)
        bar["base"].append(local_time(start))
        bar["x"].append(max(seconds * 1000, 0.05))  # ms; a sliver stays visible
        bar["hovertext"].append(hover)

    for index, start, end in round_spans(dump):
        add_bar(
            "capture round",
            "capture rounds",
            start,
            end - start,
            f"capture round {index}<br>{end - start:.3f} s",
        )
    tf = dump.tf_events.dropna(subset=["start_ns"]) if not dump.tf_events.empty else dump.tf_events
    note_parts = []
    if len(tf) > MAX_TF_BARS:
        note_parts.append(
            f"the {MAX_TF_BARS} longest of {len(tf)} TF events are drawn "
            "(the chrome-trace export has all)"
        )
        tf = tf.assign(_d=tf["duration_ns"].fillna(0)).nlargest(MAX_TF_BARS, "_d")
    for r in records(tf):
        name = str(r.name or r.op or "?")
        start = tf_seconds(float(r.start_ns), capture_start)
        duration = float(r.duration_ns or 0) / 1e9 if not pd.isna(r.duration_ns) else 0.0
        track = ptext(f"TF {r.address} \u00b7 {r.line}", 60)
        add_bar(
            _tf_kind(name),
            track,
            start,
            duration,
            f"<b>{ptext(name, 120)}</b><br>{ptext(r.address)} {ptext(r.plane, 60)} / "
            f"{ptext(r.line, 60)}<br>{duration * 1000:.3f} ms",
        )
    traces = [
        {
            "type": "bar",
            "orientation": "h",
            "name": kind,
            "y": bar["y"],
            "x": bar["x"],
            "base": bar["base"],
            "hovertext": bar["hovertext"],
            "hoverinfo": "text",
            "marker": {"color": TF_COLORS[kind]},
        }
        for kind, bar in bars.items()
    ]
    timed = [e for e in events if e.time is not None]
    untimed = len(events) - len(timed)
    if len(timed) > MAX_LOG_MARKS:
        keep = [e for e in timed if e.kind != "step"]
        steps = [e for e in timed if e.kind == "step"]
        room = max(MAX_LOG_MARKS - len(keep), 0)
        stride = max(1, -(-len(steps) // room)) if room else len(steps) + 1
        timed = sorted(keep[:MAX_LOG_MARKS] + steps[::stride][:room], key=lambda e: e.time or 0.0)
        note_parts.append("step lines are thinned out")
    for kind, (symbol, color) in LOG_STYLE.items():
        mine = [e for e in timed if e.kind == kind]
        if not mine:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"log: {kind}",
                "x": [local_time(e.time or 0.0) for e in mine],
                "y": [ptext(log_track(e, labels), 60) for e in mine],
                "hovertext": [
                    f"<b>{kind}</b> line {e.line_no}<br>{ptext(e.text, 240)}" for e in mine
                ],
                "hoverinfo": "text",
                "marker": {
                    "symbol": symbol,
                    "color": color,
                    "size": 11,
                    "line": {"width": 1, "color": "#333"},
                },
            }
        )
    if untimed:
        note_parts.append(
            f"{untimed} log event(s) carry no timestamp and are listed in the log table only"
        )
    note = ("Note: " + "; ".join(note_parts) + ".") if note_parts else ""
    if not traces:
        return FigureSpec(
            "timeline",
            None,
            "No timed events: no profiler trace, no capture rounds and no timestamped log lines.",
        )
    tracks = {y for t in traces for y in t["y"]}
    layout = base_layout(
        "Timeline: capture rounds, TF profiler events, log events (local time)",
        min(180 + 30 * len(tracks), 1400),
    )
    layout.update(
        {
            "barmode": "overlay",
            "xaxis": {"type": "date", "showgrid": True},
            "yaxis": {"type": "category", "automargin": True, "autorange": "reversed"},
            "legend": {"orientation": "h", "y": -0.15},
            "hovermode": "closest",
            "margin": {"l": 20, "r": 20, "t": 40, "b": 60},
        }
    )
    return FigureSpec("timeline", {"data": traces, "layout": layout}, note)


# -- checkpoint sizes ----------------------------------------------------------------------

MAX_FILE_LINES = 10


def checkpoint_figure(dump: Dump, progress: Mapping[str, Mapping[str, Any]]) -> FigureSpec:
    rounds = dump.checkpoint_rounds
    if rounds.empty:
        return FigureSpec(
            "checkpoint",
            None,
            "No checkpoint directory was watched (capture with --checkpoint-dir).",
        )
    traces: list[dict[str, Any]] = []
    annotations = []
    files = dump.checkpoint_files
    for directory, grp in rounds.sort_values("round").groupby("dir"):
        label = ptext(directory, 80)
        xs = [
            local_time(float(t)) if t is not None and not pd.isna(t) else None for t in grp["time"]
        ]
        totals = [int(v) for v in grp["total_bytes"]]
        facts = progress.get(str(directory), {})
        state = ("growing" if facts.get("growing") else "not growing") if facts else ""
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{label} total",
                "x": xs,
                "y": totals,
                "line": {"width": 3},
                "hovertemplate": f"{label}<br>%{{y:,}} bytes in all files"
                f"{(' (' + state + ')') if state else ''}"
                "<extra></extra>",
            }
        )
        for t, timed_out in zip(xs, grp["listing_timed_out"], strict=False):
            if timed_out:
                annotations.append(
                    {
                        "x": t,
                        "y": 0,
                        "text": "listing timed out",
                        "showarrow": True,
                        "arrowcolor": "#d62728",
                        "font": {"color": "#d62728"},
                    }
                )
        mine = files[files["dir"] == directory] if not files.empty else files
        if mine.empty:
            continue
        biggest = (
            mine.groupby("name")["size"]
            .max()
            .sort_values(ascending=False)
            .head(MAX_FILE_LINES)
            .index
        )
        for name in biggest:
            per_round = mine[mine["name"] == name].sort_values("round")
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": ptext(name, 60),
                    "x": [local_time(float(t)) for t in per_round["time"]],
                    "y": [int(s or 0) for s in per_round["size"]],
                    "line": {"dash": "dot"},
                    "hovertemplate": f"{ptext(name, 120)}<br>%{{y:,}} bytes<extra></extra>",
                }
            )
    layout = base_layout("Checkpoint directory: file sizes per capture round", 420)
    layout.update(
        {
            "xaxis": {"type": "date", "title": {"text": "capture round time"}},
            "yaxis": {
                "title": {"text": "bytes"},
                "rangemode": "tozero",
                "exponentformat": "SI",
                "ticksuffix": "B",
            },
            "annotations": annotations,
            "legend": {"orientation": "h", "y": -0.25},
            "hovermode": "closest",
            "margin": {"l": 70, "r": 20, "t": 40, "b": 60},
        }
    )
    return FigureSpec("checkpoint", {"data": traces, "layout": layout})
