"""Figure data for the HTML report: pure functions from the incident model to plotly
figure specs (plain dicts, JSON-ready).

Nothing here judges or derives anything: statuses, problems, culprits, wait-for edges,
event kinds and times all come from the `Incident`. What is decided here is only how to
draw them (positions, colours, how many bars fit). Every string that came from a dump goes
through `ptext`, because plotly renders a subset of HTML in labels and hover text.
"""

from __future__ import annotations

import html
import math
import time
from collections import defaultdict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from postmortem.model import (
    CheckpointProgress,
    FlightRecord,
    Incident,
    LogEvent,
    LogKind,
    Member,
    StackNode,
    Status,
    TfEventKind,
    Thread,
    ThreadGroup,
    Timeline,
    WaitEdge,
    os_pid,
)

Figure = dict[str, Any]

FONT = {"family": "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13}
STATUS_ORDER = tuple(Status)
STATUS_COLORS = {
    Status.STUCK: "#d62728",
    Status.BUSY: "#ff9f1c",
    Status.STOPPED: "#7b3fb3",
    Status.ACTIVE: "#59a14f",
    Status.PARKED: "#c9d3df",
    Status.UNKNOWN: "#eeeeee",
}
LOG_STYLE = {
    LogKind.ERROR: ("x", "#d62728"),
    LogKind.WAITING: ("triangle-up", "#ff7f0e"),
    LogKind.SAVE: ("diamond", "#1f77b4"),
    LogKind.STEP: ("circle", "#8c8c8c"),
}
MAX_THREAD_ROWS = 300
COMPACT_MEMBERS = 48  # more members: the cluster map is a dense grid
MAX_EDGES = 150  # wait-for arrows drawn (the culprit's first)
MAX_STEP_TRACES = 24  # more step series: one line trace per job...
MAX_PROGRESS_POINTS = 15_000  # ...and at most about this many points
MAX_TREE_NODES = 2500
MAX_TF_BARS = 800
MAX_LOG_MARKS = 1500
MAX_OP_BARS = 1500  # bars of the traced-step figure (the longest ops)
MAX_STEP_POINTS = 4000  # points of the step-time figure (the newest steps)
JOB_ORDER = ("chief", "master", "ps", "worker", "evaluator")


def ptext(value: object, limit: int = 0) -> str:
    """A dump string made safe and literal for plotly's HTML-like text rendering."""
    text = str(value)
    if limit and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return html.escape(text, quote=False)


def local_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S.%f")


def local_ms(seconds: float) -> int:
    """The same instant as `local_time`, as the milliseconds a date axis reads (shorter
    in the page when there are tens of thousands of points)."""
    return int(round((seconds + time.localtime(seconds).tm_gmtoff) * 1000))


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


def _member_category(member: Member, culprit_role: str | None) -> str:
    if culprit_role is not None and member.role == culprit_role:
        return "culprit"
    if not member.captured:
        return "absent"
    return "problems" if member.problems else "healthy"


CATEGORY_STYLE = {
    "culprit": ("culprit", "square", "#d62728"),
    "problems": ("has problems", "square", "#ff9f1c"),
    "healthy": ("no problem seen", "square", "#2ca02c"),
    "absent": ("absent from the dump", "square-open", "#7f7f7f"),
}


def _job_rank(job: str) -> int:
    return JOB_ORDER.index(job) if job in JOB_ORDER else len(JOB_ORDER)


def by_host(members: Sequence[Member]) -> bool:
    """Whether the map groups members by host: they live on more than one."""
    return len({m.host for m in members}) > 1


def _columns(members: Sequence[Member]) -> list[tuple[str, list[Member]]]:
    """The map's columns: one per host when members live on several, else one per job;
    each column's members in task order."""
    ordered = sorted(members, key=lambda m: (_job_rank(m.job), m.job, m.task, m.role))
    hosts = by_host(members)
    columns: dict[str, list[Member]] = {}
    for m in ordered:
        columns.setdefault(m.host if hosts else m.job, []).append(m)
    return list(columns.items())


def compact(members: Sequence[Member]) -> bool:
    """Whether the map is drawn as a dense grid: too many members for a labelled column."""
    return len(members) > COMPACT_MEMBERS


def grid_rows(members: Sequence[Member]) -> int:
    """Rows of the dense grid: about square, within what a page shows."""
    return min(max(20, math.ceil(math.sqrt(len(members)))), 120)


def cluster_positions(members: Sequence[Member]) -> dict[str, tuple[float, float]]:
    """role -> (x, y): one column per job (chief, ps, worker...), one row per task; when
    the members live on several hosts, one column per host instead. Above COMPACT_MEMBERS
    each column becomes a block of sub-columns `grid_rows` tall, side by side."""
    positions: dict[str, tuple[float, float]] = {}
    if not compact(members):
        for column, (_, mine) in enumerate(_columns(members)):
            for row, m in enumerate(mine):
                positions[m.role] = (float(column), -float(row))
        return positions
    rows = grid_rows(members)
    left = 0
    for _, mine in _columns(members):
        for index, m in enumerate(mine):
            positions[m.role] = (float(left + index // rows), -float(index % rows))
        left += math.ceil(len(mine) / rows) + 1
    return positions


def _column_ticks(
    members: Sequence[Member], positions: dict[str, tuple[float, float]]
) -> tuple[list[float], list[str]]:
    """Where each column's name goes on the x axis (`cluster_positions`), and the name."""
    vals, texts = [], []
    for name, mine in _columns(members):
        xs = [positions[m.role][0] for m in mine]
        vals.append((min(xs) + max(xs)) / 2)
        texts.append(ptext(name) + (f" ({len(mine)})" if compact(members) else ""))
    return vals, texts


def job_of(jobs: Mapping[str, str], role: str) -> str:
    """A role's job (`jobs`: role -> job, the members'); a process no cluster spec names,
    "pid:N", is in "pid"."""
    return jobs.get(role) or role.split(":", 1)[0]


Edge = tuple[str, str, str]  # waiter, waited-for, why: one arrow or table row


def drawn_edges(
    wait_for: Sequence[WaitEdge],
    culprit_role: str | None,
    limit: int,
    ends: Container[str] | None = None,
) -> tuple[list[Edge], int]:
    """The single wait-for edges a figure or table has room for, those into and out of the
    culprit first, then the others in the analysis's order; and how many there are in
    all. `ends`: only edges with both ends in it (the members a figure places)."""

    def fits(a: str, b: str) -> bool:
        return a != b and (ends is None or (a in ends and b in ends))

    total = 0
    for e in wait_for:
        targets = {t for t in e.waits_on if ends is None or t in ends}
        for w in e.waiters:
            if ends is None or w.role in ends:
                total += len(targets) - (w.role in targets)
    every = (edge for e in wait_for for edge in e.pairs() if fits(edge[0], edge[1]))
    if total <= limit:
        return list(every), total
    near: list[Edge] = []
    for e in wait_for:
        waited = culprit_role in e.waits_on
        for w in e.waiters:
            if w.role == culprit_role:
                near.extend((w.role, t, w.why) for t in e.waits_on if fits(w.role, t))
            elif waited and culprit_role is not None and fits(w.role, culprit_role):
                near.append((w.role, culprit_role, w.why))
            if len(near) >= limit:
                return near[:limit], total
    rest = islice((x for x in every if culprit_role not in (x[0], x[1])), limit - len(near))
    return near + list(rest), total


COLLECTIVE_WORDS = {
    "inside": "in a collective",
    "outside": "in no collective",
    "unseen": "collective: not seen",
}


def _absent_words(member: Member) -> str:
    return "host not captured" if member.not_captured else "absent"


def _collective_words(member: Member) -> str:
    return COLLECTIVE_WORDS.get(member.collective, ptext(member.collective, 40))


def _collective_group(
    members: Sequence[Member], positions: dict[str, tuple[float, float]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A box around the members of the collective group, with a note of who is inside a
    collective and who is not (Member.collective, from the analysis)."""
    group = [m for m in members if m.collective and m.role in positions]
    if not group:
        return [], []
    xs = [positions[m.role][0] for m in group]
    ys = [positions[m.role][1] for m in group]
    inside = [m.role for m in group if m.collective == "inside"]
    outside = [m.role for m in group if m.collective == "outside"]
    note = f"collective group: {len(inside)} in a collective"
    if outside:
        note += f"; not in one: {', '.join(outside[:6])}" + (" ..." if len(outside) > 6 else "")
    shape = {
        "type": "rect",
        "xref": "x",
        "yref": "y",
        "x0": min(xs) - 0.45,
        "x1": max(xs) + 0.45,
        "y0": min(ys) - 0.62,
        "y1": max(ys) + 0.42,
        "line": {"color": "#1f77b4", "width": 1.5, "dash": "dot"},
        "fillcolor": "rgba(31,119,180,0.05)",
        "layer": "below",
    }
    label = {
        "x": min(xs) - 0.43,
        "y": max(ys) + 0.4,
        "xref": "x",
        "yref": "y",
        "xanchor": "left",
        "yanchor": "top",
        "showarrow": False,
        "text": ptext(note, 160),
        "font": {"size": 11, "color": "#1f77b4"},
    }
    return [shape], [label]


def cluster_map_figure(
    members: Sequence[Member],
    wait_for: Sequence[WaitEdge],
    status_counts: dict[str, dict[Status, int]],
    culprit_role: str | None,
) -> FigureSpec:
    """`status_counts`: role -> threads per status (Incident.status_counts_by_pid)."""
    if not members:
        return FigureSpec("cluster", None, "The dump names no cluster members.")
    positions = cluster_positions(members)
    dense = compact(members)
    traces = []
    for category, (name, symbol, color) in CATEGORY_STYLE.items():
        chosen = [m for m in members if _member_category(m, culprit_role) == category]
        if not chosen:
            continue
        xs, ys, texts, hovers = [], [], [], []
        for m in chosen:
            x, y = positions[m.role]
            xs.append(x)
            ys.append(y)
            texts.append(
                f"<b>{ptext(m.role)}</b>"
                + (
                    ""
                    if dense
                    else "<br>"
                    + (f"pid {os_pid(m.pid)}" if m.pid is not None else _absent_words(m))
                    + (f"<br><i>{_collective_words(m)}</i>" if m.collective else "")
                )
            )
            lines = [
                f"<b>{ptext(m.role)}</b>",
                f"address: {ptext(m.address or '-')}",
                f"pid: {os_pid(m.pid) if m.pid is not None else 'not in the dump'}",
                f"host: {ptext(m.host)}",
            ]
            if m.collective:
                lines.append(f"collective: {_collective_words(m)}")
            counts = status_counts.get(m.role)
            if counts:
                lines.append(
                    "threads: "
                    + ", ".join(f"{counts[s]} {s.value}" for s in STATUS_ORDER if counts.get(s))
                )
            lines += [f"problem: {ptext(p, 160)}" for p in m.problems]
            if m.not_captured:
                lines.append(f"not captured: {ptext(m.not_captured, 160)}")
            hovers.append("<br>".join(lines))
        labelled = not dense or category == "culprit"
        culprit = category == "culprit"
        traces.append(
            {
                "type": "scatter",
                "mode": "markers+text" if labelled else "markers",
                "name": name,
                "x": xs,
                "y": ys,
                "text": texts,
                "textposition": "bottom center",
                "hovertext": hovers,
                "hoverinfo": "text",
                "marker": {
                    "symbol": symbol,
                    "size": (16 if culprit else 9) if dense else 34,
                    "color": color,
                    "line": {
                        "width": (2 if dense else 4) if culprit else (0.5 if dense else 1.5),
                        "color": "#7a0000" if culprit else "#333",
                    },
                },
            }
        )
    annotations = []
    drawn, drawable = drawn_edges(wait_for, culprit_role, MAX_EDGES, positions)
    for a, b, why in drawn:
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
                "arrowsize": 1 if dense else 1.3,
                "arrowwidth": 1 if dense else 2,
                "arrowcolor": "#d62728" if b == culprit_role else "#555",
                "opacity": 0.5 if dense else 1,
                "standoff": 8 if dense else 22,
                "startstandoff": 6 if dense else 22,
                "text": "",
                "hovertext": ptext(f"{a} waits on {b}: {why}", 200),
            }
        )
    shapes, group_notes = _collective_group(members, positions)
    annotations.extend(group_notes)
    tickvals, ticktext = _column_ticks(members, positions)
    xs_all = [x for x, _ in positions.values()]
    rows = max(1, len({y for _, y in positions.values()}))
    tall = bool(shapes)  # a third line under each marker, and the group's box
    if dense:
        height = max(320, 18 * rows + 170)
    else:
        height = max(320, 120 * rows + 150) if tall else max(260, 80 * rows + 130)
    title = "Cluster map: who waits on whom" + (", by host" if by_host(members) else "")
    layout = base_layout(title, height)
    layout.update(
        {
            "showlegend": True,
            "legend": {"orientation": "h", "y": -0.05},
            "xaxis": {
                "tickvals": tickvals,
                "ticktext": ticktext,
                "side": "top",
                "range": [min(xs_all) - 0.6, max(xs_all) + 0.6],
                "showgrid": False,
                "zeroline": False,
            },
            "yaxis": {"visible": False, "range": [-rows + (0.2 if tall else 0.4), 0.6]},
            "annotations": annotations,
            "shapes": shapes,
            "hovermode": "closest",
            "margin": {"l": 20, "r": 20, "t": 70, "b": 30},
        }
    )
    note = ""
    if dense:
        note = (
            f"{len(members)} members, a square each, in task order down each column; "
            "hover one for its role, address, pid and problems."
        )
    if len(drawn) < drawable:
        note += (
            f" {len(drawn)} of {drawable} wait-for edges drawn (to and from the "
            "culprit first); `postmortem analyze --json` lists them all."
        )
    return FigureSpec("cluster", {"data": traces, "layout": layout}, note.strip())


# -- thread states ----------------------------------------------------------------------


@dataclass
class ThreadRow:
    label: str
    status: Status
    pid: int
    role: str
    count: int
    states: dict[int, str]  # round -> kernel state letter
    hover: str
    wakeups: dict[int, int] = field(default_factory=dict)  # round -> wakeups after it


def _thread_hover(t: Thread) -> str:
    lines = [
        f"<b>{ptext(t.name)}</b> (tid {t.tid}) in {ptext(t.role)}",
        f"status: <b>{t.status.value}</b>"
        + (f", waits on {t.waits_on.value}" if t.waits_on.value else ""),
        f"CPU {t.cpu_seconds:.3f} s, wchan {ptext(t.wchan or '-')}",
    ]
    if t.stack:
        text = " <- ".join(f.function for f in t.stack.frames[:8])
        lines.append("stack: " + ptext(text, 200).replace(" &lt;- ", "<br>  &lt;- "))
    if t.decided_by:
        lines.append(f"why: {ptext(t.decided_by, 160)}")
    return "<br>".join(lines)


def _one_row(t: Thread) -> ThreadRow:
    return ThreadRow(
        f"{ptext(t.role)} \u00b7 {ptext(t.name, 40)} #{t.tid}",
        t.status,
        t.pid,
        t.role,
        1,
        dict(t.kernel_states),
        _thread_hover(t),
        dict(t.wakeups_by_round),
    )


def _group_row(g: ThreadGroup) -> ThreadRow:
    if g.count == 1:
        label = f"{ptext(g.role)} \u00b7 {ptext(g.family, 40)} #{g.tids[0]}"
    else:
        label = f"{ptext(g.role)} \u00b7 {ptext(g.family, 40)}* \u00d7{g.count}"
    hover = (
        f"<b>{g.count} native thread(s)</b> {ptext(g.family)}* in {ptext(g.role)}<br>"
        f"status: <b>{g.status.value}</b>, wchan {ptext(g.wchan or '-')}<br>"
        "tids: "
        + ptext(", ".join(str(t) for t in g.tids[:12]) + (" ..." if g.count > 12 else ""))
    )
    return ThreadRow(label, g.status, g.pid, g.role, g.count, dict(g.kernel_states), hover)


def thread_rows(
    threads: Sequence[Thread],
    groups: Sequence[ThreadGroup],
    process_order: Sequence[int],
    jobs: Mapping[str, str] | None = None,
    keep: Sequence[int] = (),
) -> list[ThreadRow]:
    """One row per thread worth one (a stack, stuck or busy), one per group of alike threads.

    With `jobs` (role -> job), for a dump of many processes: the threads of every process
    but those in `keep` (the culprit) are drawn as one row per job, thread name (its
    trailing number dropped), status and kernel states, so the figure does not grow with
    the number of processes; the rows of `keep` come first, one per thread."""
    rank = {pid: i for i, pid in enumerate(process_order)}
    if jobs is None:
        rows = [_one_row(t) for t in threads] + [_group_row(g) for g in groups]
        rows.sort(key=lambda r: (rank.get(r.pid, len(rank)), r.status.rank, r.label))
        return rows
    kept = set(keep)
    own = [_one_row(t) for t in threads if t.pid in kept]
    own += [_group_row(g) for g in groups if g.pid in kept]
    own.sort(key=lambda r: (rank.get(r.pid, len(rank)), r.status.rank, r.label))
    alike: dict[tuple[str, str, Status, Any], list[Thread | ThreadGroup]] = {}
    for t in threads:
        if t.pid not in kept:
            key = (job_of(jobs, t.role), t.family, t.status, t.kernel_states)
            alike.setdefault(key, []).append(t)
    for g in groups:
        if g.pid not in kept:
            key = (job_of(jobs, g.role), g.family, g.status, g.kernel_states)
            alike.setdefault(key, []).append(g)
    rows = []
    for (job, family, status, _), members in alike.items():
        count = sum(m.count if isinstance(m, ThreadGroup) else 1 for m in members)
        roles = list(dict.fromkeys(m.role for m in members))
        first = members[0]
        sample = _thread_hover(first) if isinstance(first, Thread) else _group_row(first).hover
        wakeups: dict[int, int] = {}
        for m in members:
            if isinstance(m, Thread):
                for rnd, n in m.wakeups_by_round:
                    wakeups[rnd] = max(wakeups.get(rnd, 0), n)
        hover = (
            f"<b>{count} thread(s) {ptext(family)}* in {len(roles)} {ptext(job)} "
            f"process(es)</b>, all <b>{status.value}</b><br>"
            + ptext(", ".join(roles[:10]))
            + (f" and {len(roles) - 10} more" if len(roles) > 10 else "")
            + "<br>the first of them:<br>"
            + sample
        )
        rows.append(
            ThreadRow(
                f"{ptext(job)} \u00d7{len(roles)} \u00b7 {ptext(family, 40)} \u00d7{count}",
                status,
                first.pid,
                first.role,
                count,
                dict(first.kernel_states),
                hover,
                wakeups,
            )
        )
    rows.sort(key=lambda r: (r.status.rank, -r.count, r.label))
    return own + rows


def thread_states_figure(
    threads: Sequence[Thread],
    groups: Sequence[ThreadGroup],
    rounds: Sequence[int],
    process_order: Sequence[int],
    jobs: Mapping[str, str] | None = None,
    keep: Sequence[int] = (),
) -> FigureSpec:
    """`jobs` and `keep`: see `thread_rows`; given when the dump has many processes."""
    legend = [(s.value, STATUS_COLORS[s]) for s in STATUS_ORDER[:-1]]
    rows = thread_rows(threads, groups, process_order, jobs, keep)
    if not rows:
        return FigureSpec("threads", None, "The dump holds no thread states.", legend)
    note = ""
    if len(rows) > MAX_THREAD_ROWS:
        note = f"Showing the first {MAX_THREAD_ROWS} of {len(rows)} rows (stuck and busy first)."
        rows = rows[:MAX_THREAD_ROWS]
    columns = sorted(set(rounds)) or sorted({rnd for row in rows for rnd in row.states})
    z, text, hover = [], [], []
    for row in rows:
        z.append([row.status.rank if rnd in row.states else None for rnd in columns])
        text.append(
            [
                ptext(row.states.get(rnd, ""))
                + (f" {row.wakeups[rnd]}" if rnd in row.wakeups else "")
                for rnd in columns
            ]
        )
        hover.append(
            [
                f"{row.hover}<br>round {rnd}: kernel state {ptext(row.states.get(rnd, 'not read'))}"
                + (
                    f", then woke {row.wakeups[rnd]} time(s) before the next look"
                    if rnd in row.wakeups
                    else ""
                )
                for rnd in columns
            ]
        )
    n = len(STATUS_ORDER)
    colorscale = []
    for i, status in enumerate(STATUS_ORDER):
        colorscale += [[i / n, STATUS_COLORS[status]], [(i + 1) / n, STATUS_COLORS[status]]]
    trace = {
        "type": "heatmap",
        "z": z,
        "x": [f"round {r}" for r in columns],
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
        "Threads across rounds (colour: status; letter: kernel state; number: wakeups after)",
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

TREE_COLORS = {
    Status.STUCK: "#e57373",
    Status.BUSY: "#ffb74d",
    Status.STOPPED: "#b39ddb",
    Status.ACTIVE: "#9ccc65",
    Status.PARKED: "#b0c4de",
    Status.UNKNOWN: "#dddddd",
}


def stack_tree_figure(
    root: StackNode | None,
    labels: dict[int, str],
    source: str,
    culprit_pid: int | None = None,
) -> FigureSpec:
    """Icicle of the merged stacks; a frame's colour is the worst status through it."""
    legend = [(s.value, TREE_COLORS[s]) for s in STATUS_ORDER[:-1]]
    if root is None or not root.threads:
        return FigureSpec("stacks", None, "The dump holds no stacks.", legend)
    ids: list[str] = []
    parents: list[str] = []
    names: list[str] = []
    values: list[int] = []
    custom: list[list[str]] = []
    colors: list[str] = []
    node_ids: dict[int, str] = {}
    truncated = 0
    for node, parent in root.walk():
        if len(ids) >= MAX_TREE_NODES:
            truncated += 1
            continue
        if parent is not None and id(parent) not in node_ids:
            truncated += 1  # its parent was cut
            continue
        node_id = f"n{len(ids)}"
        node_ids[id(node)] = node_id
        ids.append(node_id)
        parents.append(node_ids[id(parent)] if parent is not None else "")
        label = node.frame.label if node.frame is not None else f"all threads ({len(node.threads)})"
        names.append(ptext(label, 90))
        values.append(len(node.threads))
        colors.append(TREE_COLORS[node.status] if parent is not None else "#f4f6f8")
        procs = list(node.processes)
        culprit_mark = " (culprit)" if culprit_pid in node.processes else ""
        custom.append(
            [
                ptext(
                    ", ".join(labels.get(p, str(p)) for p in procs[:8])
                    + (f" and {len(procs) - 8} more" if len(procs) > 8 else "")
                )
                + culprit_mark,
                ptext("; ".join(node.threads[:6]) + (" ..." if len(node.threads) > 6 else ""), 400),
                ptext(node.frame.filename if node.frame is not None else "", 160),
                node.status.value if parent is not None else "",
            ]
        )
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

TF_COLORS = {
    TfEventKind.CHECKPOINT_OP.value: "#d62728",
    TfEventKind.TRANSFER.value: "#ff9f1c",
    TfEventKind.OP.value: "#4e79a7",
    "capture round": "#b8c4d6",
}


def _thin(events: list[LogEvent], limit: int) -> tuple[list[LogEvent], bool]:
    """Keep every non-step mark and an even spread of step marks, `limit` in all."""
    if len(events) <= limit:
        return events, False
    keep = [e for e in events if e.kind is not LogKind.STEP]
    steps = [e for e in events if e.kind is LogKind.STEP]
    room = max(limit - len(keep), 0)
    stride = max(1, -(-len(steps) // room)) if room else len(steps) + 1
    return sorted(keep[:limit] + steps[::stride][:room], key=lambda e: e.time or 0.0), True


def timeline_figure(timeline: Timeline) -> FigureSpec:
    bars: dict[str, dict[str, list[Any]]] = defaultdict(lambda: defaultdict(list))

    def add_bar(kind: str, track: str, start: float, seconds: float, hover: str) -> None:
        bar = bars[kind]
        bar["y"].append(track)
        bar["base"].append(local_time(start))
        bar["x"].append(max(seconds * 1000, 0.05))  # ms; a sliver stays visible
        bar["hovertext"].append(hover)

    for r in timeline.rounds:
        seconds = r.ended_at - r.started_at
        add_bar(
            "capture round",
            "capture rounds",
            r.started_at,
            seconds,
            f"capture round {r.index}<br>{seconds:.3f} s",
        )
    tf = list(timeline.tf_events)
    note_parts = []
    if len(tf) > MAX_TF_BARS:
        note_parts.append(
            f"the {MAX_TF_BARS} longest of {len(tf)} TF events are drawn "
            "(the chrome-trace export has all)"
        )
        tf = sorted(tf, key=lambda e: e.duration_s, reverse=True)[:MAX_TF_BARS]
    for e in tf:
        add_bar(
            e.kind.value,
            ptext(f"TF {e.address} \u00b7 {e.line}", 60),
            e.start,
            e.duration_s,
            f"<b>{ptext(e.name, 120)}</b><br>{ptext(e.address)} {ptext(e.plane, 60)} / "
            f"{ptext(e.line, 60)}<br>{e.duration_s * 1000:.3f} ms",
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
    timed, thinned = _thin([e for e in timeline.log_events if e.time is not None], MAX_LOG_MARKS)
    if thinned:
        note_parts.append("step lines are thinned out")
    for kind, (symbol, color) in LOG_STYLE.items():
        mine = [e for e in timed if e.kind is kind]
        if not mine:
            continue
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": f"log: {kind.value}",
                "x": [local_time(e.time or 0.0) for e in mine],
                "y": [ptext(e.track, 60) for e in mine],
                "hovertext": [
                    f"<b>{kind.value}</b> line {e.line_no}<br>{ptext(e.text, 240)}" for e in mine
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
    untimed = timeline.untimed_log_events
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


# -- progress: steps over time ------------------------------------------------------------


def progress_figure(
    timeline: Timeline,
    window: tuple[float, float] | None,
    jobs: Mapping[str, str] | None = None,
) -> FigureSpec:
    """Global step over time per process, saves marked, the capture's rounds shaded: a
    stalled job shows flat lines with saves going on (tensorflow#12090)."""
    series = [s for s in timeline.steps if any(p.time is not None for p in s.points)]
    if not series:
        return FigureSpec(
            "progress",
            None,
            "No step lines with a time: the logs were not captured (stdout/stderr not "
            "files; pass --log), or the job logs no steps.",
        )
    traces: list[dict[str, Any]] = []
    thinned = ""
    if len(series) <= MAX_STEP_TRACES:
        for s in series:
            points = [p for p in s.points if p.time is not None]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": ptext(s.track, 60),
                    "x": [local_time(p.time or 0.0) for p in points],
                    "y": [p.step for p in points],
                    "marker": {"size": 4},
                    "line": {"width": 2, "shape": "hv"},
                    "hovertext": [
                        f"{ptext(s.role)}: step {p.step}"
                        + (" (time placed between capture rounds)" if p.estimated else "")
                        for p in points
                    ],
                    "hoverinfo": "text",
                }
            )
    else:
        # Many processes: one trace per job, its series separated by gaps, so that the
        # page draws a handful of traces, not thousands.
        by_job: dict[str, list[Any]] = {}
        for s in series:
            by_job.setdefault(job_of(jobs or {}, s.role), []).append(s)
        total = sum(1 for s in series for p in s.points if p.time is not None)
        stride = max(1, math.ceil(total / MAX_PROGRESS_POINTS))
        for job, mine in by_job.items():
            xs: list[int | None] = []
            ys: list[int | None] = []
            who: list[str] = []
            for s in mine:
                points = [p for p in s.points if p.time is not None]
                for i, p in enumerate(points):
                    if i % stride and i != len(points) - 1:
                        continue
                    xs.append(local_ms(p.time or 0.0))
                    ys.append(p.step)
                    who.append(ptext(s.role))
                xs.append(None)
                ys.append(None)
                who.append("")
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": f"{ptext(job, 40)} ({len(mine)})",
                    "x": xs,
                    "y": ys,
                    "customdata": who,
                    "hovertemplate": "%{customdata}: step %{y}<extra></extra>",
                    "marker": {"size": 3},
                    "line": {"width": 1, "shape": "hv"},
                    "opacity": 0.6,
                    "connectgaps": False,
                }
            )
        if stride > 1:
            thinned = (
                f"{len(series)} processes' steps: every {stride}th point of each line is "
                "drawn (and its last); `postmortem analyze --json` has them all."
            )
    saves = [e for e in timeline.log_events if e.kind is LogKind.SAVE and e.time is not None]
    if saves:
        steps_by_track = {s.track: [p for p in s.points if p.time is not None] for s in series}

        def step_at(track: str, when: float) -> int:
            known = [p.step for p in steps_by_track.get(track, []) if (p.time or 0) <= when]
            return known[-1] if known else 0

        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": "checkpoint save",
                "x": [local_time(e.time or 0.0) for e in saves],
                "y": [step_at(e.track, e.time or 0.0) for e in saves],
                "marker": {
                    "symbol": "diamond",
                    "size": 11,
                    "color": "#1f77b4",
                    "line": {"width": 1, "color": "#333"},
                },
                "hovertext": [f"{ptext(e.track, 60)}<br>{ptext(e.text, 200)}" for e in saves],
                "hoverinfo": "text",
            }
        )
    shapes = []
    if window is not None:
        shapes.append(_band(window[0], window[1], "#f1f4f8"))
    shapes += [_band(r.started_at, r.ended_at, "#c9d3df") for r in timeline.rounds]
    layout = base_layout("Global step over time, saves marked, the capture shaded", 380)
    layout.update(
        {
            "xaxis": {"type": "date", "title": {"text": "local time"}},
            "yaxis": {"title": {"text": "step"}, "rangemode": "tozero"},
            "shapes": shapes,
            "legend": {"orientation": "h", "y": -0.25},
            "hovermode": "closest",
            "margin": {"l": 70, "r": 20, "t": 40, "b": 60},
        }
    )
    note = ""
    if any(p.estimated for s in series for p in s.points):
        note = (
            "Lines without a timestamp are placed between the capture rounds that saw the "
            "log reach them."
        )
    return FigureSpec("progress", {"data": traces, "layout": layout}, f"{note} {thinned}".strip())


def _band(start: float, end: float, color: str) -> dict[str, Any]:
    return {
        "type": "rect",
        "xref": "x",
        "yref": "paper",
        "x0": local_time(start),
        "x1": local_time(max(end, start + 0.05)),
        "y0": 0,
        "y1": 1,
        "fillcolor": color,
        "opacity": 0.6,
        "line": {"width": 0},
        "layer": "below",
    }


# -- the flight recorder -------------------------------------------------------------------


def step_times_figure(
    flights: Sequence[FlightRecord], window: tuple[float, float] | None
) -> FigureSpec:
    """How long each recorded step took, over time; saves as bands (red: it never ended),
    the moment steps stopped as a line, the watchdog's stalls marked."""
    if not any(f.steps for f in flights):
        return FigureSpec(
            "steptimes",
            None,
            "No flight recorder data: the job does not run postmortem.recorder (see "
            "docs/recorder.md), or it recorded no step.",
        )
    traces: list[dict[str, Any]] = []
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    budget = max(MAX_STEP_POINTS // max(len(flights), 1), 50)
    thinned = False
    for record in flights:
        steps = [s for s in record.steps if s.seconds is not None]
        if len(steps) > budget:
            steps, thinned = steps[-budget:], True
        name = ptext(f"{record.role} (pid {os_pid(record.pid)})", 60)
        traces.append(
            {
                "type": "scatter",
                "mode": "markers",
                "name": name,
                "x": [local_time(s.started) for s in steps],
                "y": [s.seconds for s in steps],
                "marker": {"size": [7 if s.traced else 4 for s in steps]},
                "hovertext": [
                    f"{name}: step {ptext(s.global_step if s.global_step is not None else '?')}"
                    f" took {s.seconds:.3f}s" + (" (traced)" if s.traced else "")
                    for s in steps
                ],
                "hoverinfo": "text",
            }
        )
        running = record.running_step
        if running is not None and window is not None:
            so_far = max(window[1] - running.started, 0.0)
            traces.append(
                {
                    "type": "scatter",
                    "mode": "markers",
                    "name": f"{name}: step still running",
                    "x": [local_time(running.started)],
                    "y": [so_far],
                    "marker": {"symbol": "triangle-up", "size": 13, "color": "#d62728"},
                    "hovertext": [f"{name}: a step began here and had not ended {so_far:.0f}s on"],
                    "hoverinfo": "text",
                }
            )
        for save in record.saves:
            end = save.ended if save.ended is not None else (window[1] if window else None)
            if end is None:
                continue
            shapes.append(_band(save.began, end, "#fbd5d5" if save.ended is None else "#d6e6f5"))
        if record.steps_stopped is not None:
            shapes.append(_vline(record.steps_stopped, "#d62728"))
            annotations.append(
                {
                    "x": local_time(record.steps_stopped),
                    "y": 1,
                    "yref": "paper",
                    "text": ptext(f"{record.role}: steps stopped"),
                    "showarrow": False,
                    "font": {"color": "#d62728"},
                    "xanchor": "left",
                }
            )
        shapes.extend(_vline(stall.reported, "#ff7f0e") for stall in record.stalls)
    if window is not None:
        shapes.append(_band(window[0], window[1], "#f1f4f8"))
    layout = base_layout("Step times from the flight recorder, saves and stalls marked", 380)
    layout.update(
        {
            "xaxis": {"type": "date", "title": {"text": "local time (step start)"}},
            "yaxis": {"title": {"text": "seconds"}, "type": "log"},
            "shapes": shapes,
            "annotations": annotations,
            "legend": {"orientation": "h", "y": -0.25},
            "hovermode": "closest",
            "margin": {"l": 70, "r": 20, "t": 40, "b": 60},
        }
    )
    note = "Only the newest steps of each process are drawn." if thinned else ""
    legend = [
        ("save", "#d6e6f5"),
        ("save that never ended", "#fbd5d5"),
        ("steps stopped", "#d62728"),
        ("watchdog stall", "#ff7f0e"),
    ]
    return FigureSpec("steptimes", {"data": traces, "layout": layout}, note, legend)


def _vline(when: float, color: str) -> dict[str, Any]:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": local_time(when),
        "x1": local_time(when),
        "y0": 0,
        "y1": 1,
        "line": {"color": color, "width": 2, "dash": "dash"},
    }


def traced_step_figure(flights: Sequence[FlightRecord]) -> FigureSpec:
    """The last traced step of each recording process, one row per device, as TF's
    Timeline showed it in chrome://tracing: each op a bar, times from the step's start."""
    traced = [(f, f.last_trace) for f in flights if f.last_trace is not None]
    if not traced:
        return FigureSpec(
            "tracedstep",
            None,
            "No traced step: the job does not run postmortem.recorder, or the dump was "
            "captured before its first trace.",
        )
    budget = max(MAX_OP_BARS // len(traced), 20)
    bars: dict[str, dict[str, list[Any]]] = {}
    rows: list[str] = []
    omitted = 0
    for record, trace in traced:
        assert trace is not None
        ops = sorted(trace.ops, key=lambda op: op.duration_s, reverse=True)
        omitted += max(0, len(ops) - budget) + trace.ops_omitted
        step = f" step {trace.global_step}" if trace.global_step is not None else ""
        for op in ops[:budget]:
            row = ptext(f"{record.role}{step} · {op.role or op.device}", 80)
            if row not in rows:
                rows.append(row)
            kind = "transfer" if op.bytes is not None else "op"
            group = bars.setdefault(kind, {"y": [], "x": [], "base": [], "text": []})
            group["y"].append(row)
            group["base"].append((op.start - trace.started) * 1e3)
            group["x"].append(max(op.duration_s * 1e3, 0.001))
            size = f"<br>{op.bytes:,} bytes from {ptext(op.source_device)}" if op.bytes else ""
            group["text"].append(
                f"{ptext(op.node, 120)} ({ptext(op.op or '-')})<br>{ptext(op.device)}<br>"
                f"{op.duration_s * 1e3:.3f} ms{size}<br>{ptext(op.label, 200)}"
            )
    colors = {"op": "#4e79a7", "transfer": "#f28e2b"}
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "name": "RecvTensor transfer" if kind == "transfer" else "op",
            "y": group["y"],
            "x": group["x"],
            "base": group["base"],
            "marker": {"color": colors[kind]},
            "hovertext": group["text"],
            "hoverinfo": "text",
        }
        for kind, group in bars.items()
    ]
    layout = base_layout("Last traced step per device (flight recorder)", 120 + 28 * len(rows))
    layout.update(
        {
            "barmode": "overlay",
            "xaxis": {"title": {"text": "ms since the step began"}},
            "yaxis": {"categoryorder": "array", "categoryarray": rows[::-1], "automargin": True},
            "legend": {"orientation": "h", "y": -0.2},
            "margin": {"l": 60, "r": 20, "t": 40, "b": 60},
        }
    )
    note = f"{omitted} shorter op(s) left out." if omitted else ""
    return FigureSpec("tracedstep", {"data": data, "layout": layout}, note)


# -- checkpoint sizes ----------------------------------------------------------------------


def checkpoint_figure(checkpoints: Sequence[CheckpointProgress]) -> FigureSpec:
    if not checkpoints:
        return FigureSpec(
            "checkpoint",
            None,
            "No checkpoint directory was watched (capture with --checkpoint-dir).",
        )
    traces: list[dict[str, Any]] = []
    annotations = []
    for progress in checkpoints:
        label = ptext(progress.dir, 80)
        xs = [local_time(t) for t in progress.times]
        state = "growing" if progress.growing else "not growing"
        if progress.exists is False:
            state = "the directory does not exist"
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{label} total",
                "x": xs,
                "y": list(progress.sizes),
                "line": {"width": 3},
                "hovertemplate": f"{label}<br>%{{y:,}} bytes in all files ({state})<extra></extra>",
            }
        )
        for rnd, x in zip(progress.rounds, xs, strict=True):
            if rnd in progress.timed_out_rounds:
                annotations.append(
                    {
                        "x": x,
                        "y": 0,
                        "text": "listing timed out",
                        "showarrow": True,
                        "arrowcolor": "#d62728",
                        "font": {"color": "#d62728"},
                    }
                )
        for f in progress.files:
            points = [(x, size) for x, size in zip(xs, f.sizes, strict=True) if size is not None]
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines+markers",
                    "name": ptext(f.name, 60),
                    "x": [x for x, _ in points],
                    "y": [size for _, size in points],
                    "line": {"dash": "dot"},
                    "hovertemplate": f"{ptext(f.name, 120)}<br>%{{y:,}} bytes<extra></extra>",
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


def build_figures(incident: Incident, process_order: Sequence[int]) -> dict[str, FigureSpec]:
    culprit = incident.verdict.culprit
    by_pid = incident.status_counts_by_pid()
    jobs = {m.role: m.job for m in incident.members}
    many = len(incident.processes) > COMPACT_MEMBERS
    return {
        "cluster": cluster_map_figure(
            incident.members,
            incident.wait_for,
            {m.role: by_pid.get(m.pid, {}) for m in incident.members if m.pid},
            culprit.role if culprit else None,
        ),
        "threads": thread_states_figure(
            incident.threads,
            incident.thread_groups,
            [r.index for r in incident.timeline.rounds],
            process_order,
            jobs if many else None,
            [culprit.pid] if culprit and culprit.pid is not None else [],
        ),
        "stacks": stack_tree_figure(
            incident.stack_tree,
            incident.process_labels(),
            incident.tree_source.value if incident.tree_source else "none",
            culprit.pid if culprit else None,
        ),
        "progress": progress_figure(incident.timeline, incident.window, jobs),
        "timeline": timeline_figure(incident.timeline),
        "checkpoint": checkpoint_figure(incident.checkpoints),
        "steptimes": step_times_figure(incident.flights, incident.window),
        "tracedstep": traced_step_figure(incident.flights),
    }
