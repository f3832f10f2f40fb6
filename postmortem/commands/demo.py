"""`postmortem demo SCENARIO`: start a real local TF cluster, inject a hang, capture it, stop.

The capture is the real `postmortem capture` command run as a child process, so a demo
exercises exactly what an on-call engineer runs. Needs TensorFlow (`pip install -e .[tf]`).
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from postmortem.errors import OutputExistsError, TensorFlowMissingError, UsageError

CAPTURE_TIMEOUT = 300.0


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set num_workers=3.")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def capture_command(
    run: Any,
    output: Path,
    samples: int,
    interval: float,
    tf_trace: bool = True,
    discover: bool = False,
) -> list[str]:
    """The `postmortem capture` command line that captures a running scenario."""
    argv = [
        sys.executable,
        "-m",
        "postmortem",
        "capture",
        "-o",
        str(output),
        "--force",
        "--samples",
        str(samples),
        "--interval",
        str(interval),
    ]
    if discover:
        argv.append("--discover")  # as an on-call engineer would: find the job's processes
    else:
        for pid in run.pids.values():
            argv += ["--pid", str(pid)]
    for member in list(run.members.values()):
        if not member.alive() and not member.killed:
            # It ended on its own (a TF2 job crashes when a peer is lost): its log says why.
            argv += ["--log", str(member.stderr_path)]
    if run.checkpoint_dir is not None:
        argv += ["--checkpoint-dir", str(run.checkpoint_dir)]
    if tf_trace:
        for address in run.tf_servers.values():
            argv += ["--tf-server", address]
    return argv


def demo(
    scenario: Annotated[Optional[str], typer.Argument(help="Scenario name (see --list).")] = None,
    output: Annotated[
        Optional[Path], typer.Option("-o", "--output", help="Dump directory.")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the scenarios.")] = False,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Scenario parameter KEY=VALUE.")
    ] = None,
    samples: Annotated[int, typer.Option(help="Capture rounds.")] = 3,
    interval: Annotated[float, typer.Option(help="Seconds between capture rounds.")] = 1.5,
    tf_trace: Annotated[bool, typer.Option(help="Trace each live server's profiler.")] = True,
    discover: Annotated[
        bool, typer.Option(help="Capture with --discover instead of the cluster's pids.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the hang.")] = 180.0,
    force: Annotated[bool, typer.Option(help="Replace an existing dump at -o.")] = False,
) -> int:
    """Run a real hang end to end on 127.0.0.1: start, inject, capture, stop."""
    from postmortem.scenarios import SCENARIOS, get_scenario

    console = Console(stderr=True, highlight=False)
    if list_ or scenario is None:
        for name, item in SCENARIOS.items():
            typer.echo(f"{name:28} {item.hang_class:26} {item.description}")
        if scenario is None and not list_:
            raise UsageError("Name a scenario to run.", help_text="postmortem demo --list")
        return 0
    chosen = get_scenario(scenario)
    params = _parse_params(set_ or [])
    if not (timeout > 0 and math.isfinite(timeout)):
        raise UsageError(f"--timeout must be a positive number of seconds (got {timeout}).")
    if not (samples >= 1 and interval >= 0 and math.isfinite(interval)):
        raise UsageError("--samples must be at least 1 and --interval a number of seconds.")
    if importlib.util.find_spec("tensorflow") is None:
        raise TensorFlowMissingError(
            "postmortem demo starts a real TensorFlow cluster, and TensorFlow is not installed."
        )
    out = output or Path(f"demo-{chosen.name}")
    if out.exists() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"Output directory {out} is not empty.")
    with tempfile.TemporaryDirectory(prefix=f"postmortem-demo-{chosen.name}-") as workdir:
        console.print(f"starting {chosen.name}: {chosen.description}", markup=False)
        with chosen.start(Path(workdir), **params) as run:
            run.wait_established(timeout=timeout)
            console.print(f"hang established; capturing {dict(run.pids)}", markup=False)
            argv = capture_command(run, out, samples, interval, tf_trace, discover)
            result = subprocess.run(
                argv, capture_output=True, text=True, timeout=CAPTURE_TIMEOUT, check=False
            )
            truth = dict(run.truth)
            truth["scenario"] = chosen.name
            truth["params"] = dict(getattr(run, "params", params))
            truth["all_roles"] = dict(run.all_roles)
        if not (out / "manifest.json").exists():
            raise UsageError(
                f"the capture wrote no dump (exit {result.returncode}):\n"
                f"{result.stderr.strip()[-2000:]}"
            )
        (out / "truth.json").write_text(json.dumps(truth, indent=1, default=str) + "\n")
    console.print(
        f"capture exit code {result.returncode}; cluster stopped; dump: {out}", markup=False
    )
    typer.echo(f"next: postmortem analyze {out}")
    return 0
