"""`postmortem capture`: snapshot live ps and worker processes into a dump directory."""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from collectors.capture import CaptureOptions, CaptureResult
from collectors.capture import capture as run_capture
from collectors.discover import discover as discover_pids
from postmortem.errors import (
    ExitCode,
    NotPythonError,
    PartialCaptureError,
    PermissionDeniedError,
    PostmortemError,
    TargetExitedError,
    TfServerUnreachableError,
    UsageError,
)


def default_output() -> Path:
    return Path(f"postmortem-{socket.gethostname()}-{time.strftime('%Y%m%d-%H%M%S')}")


def capture(
    pid: Annotated[Optional[list[int]], typer.Option("--pid", "-p", help="Target pid (repeatable).")] = None,
    discover: Annotated[bool, typer.Option(help="Find the TF ps/worker processes on this host.")] = False,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Dump directory to create.")] = None,
    samples: Annotated[int, typer.Option(help="Rounds of capture.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between rounds.")] = 1.0,
    native: Annotated[bool, typer.Option(help="py-spy native frames (about 2.5 s per TF process).")] = False,
    all_threads: Annotated[bool, typer.Option("--all-threads", help="Every thread's native stack via pystack (gdb fallback).")] = False,
    nonblocking: Annotated[bool, typer.Option(help="Never pause targets, even running ones.")] = False,
    log: Annotated[Optional[list[Path]], typer.Option("--log", help="Extra log file to tail (repeatable).")] = None,
    checkpoint_dir: Annotated[Optional[list[Path]], typer.Option("--checkpoint-dir", help="Checkpoint directory to watch.")] = None,
    tf_server: Annotated[Optional[list[str]], typer.Option("--tf-server", help="HOST:PORT of a tf.distribute.Server to trace.")] = None,
    tf_trace_ms: Annotated[int, typer.Option(help="Length of the profiler trace.")] = 500,
    force: Annotated[bool, typer.Option(help="Replace an existing dump at -o.")] = False,
) -> int:
    """Snapshot live ps and worker processes: stacks, thread states, sockets, logs,
    checkpoint-directory state and TF traces, without harming them."""
    console = Console(stderr=True, highlight=False)
    pids = list(pid or [])
    if discover:
        found = discover_pids()
        console.print(f"discovered {len(found)} TensorFlow process(es): {', '.join(map(str, found)) or 'none'}")
        pids += [p for p in found if p not in pids]
        if not pids:
            raise UsageError(
                "--discover found no TensorFlow ps or worker process on this host.",
                help_text="Pass --pid explicitly; run as the user that owns the job (or root).",
            )
    for address in tf_server or []:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise UsageError(f"--tf-server {address!r}: expected HOST:PORT, e.g. 127.0.0.1:2222.")
    out = output or default_output()
    options = CaptureOptions(
        pids=tuple(pids), output=out, samples=samples, interval=interval, native=native,
        all_threads=all_threads, nonblocking=nonblocking, logs=tuple(log or ()),
        checkpoint_dirs=tuple(checkpoint_dir or ()), tf_servers=tuple(tf_server or ()),
        tf_trace_ms=tf_trace_ms, force=force, command=tuple(["postmortem", *sys.argv[1:]]),
    )
    with Progress(TextColumn("capturing {task.description}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("", total=samples + 1)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_capture(options, progress)
    print_summary(result, console)
    raise_for_result(result)
    return 0


def print_summary(result: CaptureResult, console: Console) -> None:
    manifest = result.manifest
    table = Table(title=f"dump: {result.output}", title_justify="left")
    table.add_column("target")
    table.add_column("collector")
    table.add_column("ok", justify="right")
    table.add_column("failed", justify="right")
    table.add_column("last failure")
    counts: dict[tuple[str, str], list[int]] = {}
    last: dict[tuple[str, str], str] = {}
    for outcome in manifest["outcomes"]:
        key = (outcome["target"], outcome["collector"])
        counts.setdefault(key, [0, 0])
        if outcome["status"] == "ok":
            counts[key][0] += 1
        elif outcome["status"] == "failed":
            counts[key][1] += 1
            last[key] = outcome["reason"]
    for (target, collector), (ok, failed) in counts.items():
        table.add_row(target, collector, str(ok), str(failed), last.get((target, collector), "")[:80])
    console.print(table)
    rounds = len(manifest["rounds"])
    console.print(f"{len(manifest['targets'])} process(es), {rounds} round(s) "
                  f"in {manifest['ended_at'] - manifest['started_at']:.1f}s -> {result.output}")
    if result.exit_code == ExitCode.OK:
        console.print(f"next: postmortem analyze {result.output}")


def raise_for_result(result: CaptureResult) -> None:
    if result.interrupted:
        raise PostmortemError(
            f"Interrupted: {result.output} keeps the {len(result.manifest['rounds'])} round(s) "
            "captured so far.", help_text="It can be analyzed as it is.")
    code = result.exit_code
    if code == ExitCode.OK:
        return
    lines = "\n  ".join(p.message for p in result.problems[:10])
    kinds: dict[ExitCode, type[PostmortemError]] = {
        ExitCode.PERMISSION: PermissionDeniedError,
        ExitCode.NOT_PYTHON: NotPythonError,
        ExitCode.TARGET_EXITED: TargetExitedError,
        ExitCode.TF_SERVER_UNREACHABLE: TfServerUnreachableError,
        ExitCode.PARTIAL_CAPTURE: PartialCaptureError,
    }
    error = kinds[code](f"capture finished with problems (dump kept at {result.output}):\n  {lines}")
    raise error
