"""Not a hang: a save is running and its files keep growing. Say so, and estimate the end."""

from __future__ import annotations

from postmortem.analysis.facts import Facts
from postmortem.analysis.model import Evidence, Finding, HangClass
from postmortem.analysis.rules.common import MIN_WRITE_RATE, thread_evidence

FIX = (
    "Nothing is stuck: wait for the save to finish. If saves are too slow for the save "
    "interval, save less often, use Saver(sharded=True) so each ps writes in parallel, or "
    "write to faster local storage."
)


def evaluate(facts: Facts) -> list[Finding]:
    savers = [t for t in facts.threads if t.in_save]
    growing = {
        d: p
        for d, p in facts.checkpoint_progress.items()
        if (p["growing"] or p["temp_growing"]) and not p["timed_out"]
    }
    # Without a view of the checkpoint directory, a process's own write rate is the only
    # sign of progress; logs write a little, so it must be a real stream of data.
    writers = {pid: rate for pid, rate in facts.write_rates.items() if rate >= MIN_WRITE_RATE}
    saver_pids = {t.pid for t in savers}
    blind = not facts.checkpoint_progress
    if not savers or not (growing or (blind and any(pid in writers for pid in saver_pids))):
        return []
    # Any thread of the saver stuck in uninterruptible I/O every round is a stall, not progress.
    d_stuck = [
        t
        for t in facts.threads
        if t.pid in saver_pids and t.states and set(t.states) <= {"D"} and t.rounds > 1
    ]
    score = 0.55 + (0.3 if growing else 0.0) - (0.4 if d_stuck else 0.0)
    evidence = [thread_evidence(facts, t, "inside a save") for t in savers[:2]]
    estimate = ""
    for directory, p in growing.items():
        sizes = p["temp_sizes"] if p["temp_growing"] else p["sizes"]
        times = p["times"]
        assert isinstance(sizes, list) and isinstance(times, list)
        span = (times[-1] - times[0]) or 1.0
        rate = (sizes[-1] - sizes[0]) / span
        evidence.append(
            Evidence(
                f"{directory} grew from {sizes[0]:,} to {sizes[-1]:,} bytes in "
                f"{span:.1f}s ({rate / 1e6:.2f} MB/s)",
                "checkpoint/*/round-*.json",
            )
        )
        previous = _previous_size(facts, directory, str(p["last_checkpoint"] or ""))
        if previous and rate > 0 and previous > sizes[-1]:
            estimate = (
                f" At {rate / 1e6:.2f} MB/s it needs about {(previous - sizes[-1]) / rate:.0f}s "
                f"more to reach the previous checkpoint's {previous / 1e6:.0f} MB."
            )
        elif rate > 0:
            estimate = (
                f" It writes {rate / 1e6:.2f} MB/s; no earlier checkpoint tells its final size."
            )
    evidence += [
        Evidence(
            f"{facts.role(pid)} writes {writers[pid] / 1e6:.2f} MB/s",
            f"processes/{pid}/round-*/procfs.json",
            facts.role(pid),
        )
        for pid in sorted(saver_pids)
        if pid in writers
    ]
    roles = ", ".join(sorted({facts.role(t.pid) for t in savers}))
    summary = f"No hang: the checkpoint save on {roles} is progressing." + estimate
    return [
        Finding(
            HangClass.SAVE_PROGRESSING,
            max(0.05, min(score, 0.9)),
            summary,
            FIX,
            None,
            f"Saver.save on {roles} (writing)",
            tuple(evidence),
        )
    ]


def _previous_size(facts: Facts, directory: str, prefix: str) -> int:
    files = facts.dump.checkpoint_files
    if files.empty or not prefix:
        return 0
    name = prefix.rsplit("/", 1)[-1]
    last = files[(files["dir"] == directory) & (files["round"] == files["round"].max())]
    return int(last[last["name"].str.startswith(name)]["size"].sum())
