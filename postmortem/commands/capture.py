"""`postmortem capture`: snapshot live ps and worker processes into a dump directory."""

from __future__ import annotations

import importlib.util
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from collectors.capture import CaptureOptions, CaptureResult
from collectors.capture import capture as run_capture
from collectors.capture import validate as validate_capture
from collectors.discover import discover as discover_pids
from collectors.discover import job_addresses as discover_job_addresses
from collectors.discover import jobs as discover_jobs
from collectors.multihost import (
    LOCAL,
    HostResult,
    HostSpec,
    capture_hosts,
    parse_host,
    parse_pid_at,
    probe_hosts,
    probed_addresses,
)
from collectors.remote import cluster_hosts
from postmortem.errors import (
    ExitCode,
    HostNotCapturedError,
    NotPythonError,
    PartialCaptureError,
    PermissionDeniedError,
    PostmortemError,
    TargetExitedError,
    TensorFlowMissingError,
    TfServerUnreachableError,
    UsageError,
)


class CaptureInterruptedError(PostmortemError):
    """Ctrl-C: the rounds finished so far are kept as an incomplete dump."""

    exit_code = ExitCode.INTERRUPTED
    help_text = "It can be analyzed as it is (manifest.json says complete: false)."


def default_output() -> Path:
    return Path(f"postmortem-{socket.gethostname()}-{time.strftime('%Y%m%d-%H%M%S')}")


PidOpt = Annotated[
    Optional[list[str]],
    typer.Option("--pid", "-p", help="Target pid, or PID@HOST on another host (repeatable)."),
]
HostOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--host",
        help="[USER@]HOST[:SSHPORT] to capture over ssh as well (repeatable); with --discover "
        "each host's TF processes are found there.",
    ),
]
SshOptionOpt = Annotated[
    Optional[list[str]],
    typer.Option("--ssh-option", help="An ssh -o option for every host, e.g. Port=2222."),
]
ViaOpt = Annotated[
    Optional[str],
    typer.Option(
        "--via",
        help="Another remote shell instead of ssh: a command with {host}, e.g. "
        "'kubectl exec -i -n NS {host} --' or 'docker exec -i {host}' (docs/capture.md).",
    ),
]
FollowOpt = Annotated[
    bool,
    typer.Option(
        "--follow-cluster",
        help="Also capture every host the local TF processes' cluster spec names "
        "(--ps_hosts/--worker_hosts or TF_CONFIG), with --discover there.",
    ),
]
PushPySpyOpt = Annotated[
    bool,
    typer.Option(
        "--push-py-spy",
        help="Copy this host's py-spy to each remote host for the run (removed after).",
    ),
]
CompressOpt = Annotated[
    Optional[bool],
    typer.Option(
        "--compress/--no-compress",
        help="gzip the dump's files (default: when capturing more than 16 processes).",
        show_default=False,
    ),
]
RemotePythonOpt = Annotated[
    str, typer.Option("--remote-python", help="The Python to run on remote hosts.")
]
DiscoverOpt = Annotated[bool, typer.Option(help="Find the TF ps/worker processes on this host.")]
OutputOpt = Annotated[
    Optional[Path], typer.Option("-o", "--output", help="Dump directory to create.")
]
SamplesOpt = Annotated[int, typer.Option(help="Rounds of capture.")]
IntervalOpt = Annotated[float, typer.Option(help="Seconds between rounds.")]
NativeOpt = Annotated[bool, typer.Option(help="py-spy native frames (~2.5 s per TF process).")]
AllThreadsOpt = Annotated[
    bool,
    typer.Option("--all-threads", help="Every thread's native stack via pystack (gdb fallback)."),
]
NonblockingOpt = Annotated[bool, typer.Option(help="Never pause targets, even running ones.")]
LogOpt = Annotated[
    Optional[list[Path]], typer.Option("--log", help="Extra log file to tail (repeatable).")
]
CheckpointDirOpt = Annotated[
    Optional[list[Path]],
    typer.Option("--checkpoint-dir", help="Checkpoint directory to watch (repeatable)."),
]
TfServerOpt = Annotated[
    Optional[list[str]],
    typer.Option("--tf-server", help="HOST:PORT of a tf.distribute.Server to trace (repeatable)."),
]
TfTraceMsOpt = Annotated[int, typer.Option(help="Length of the profiler trace, in ms.")]
ForceOpt = Annotated[bool, typer.Option(help="Replace an existing dump at -o.")]
WatchStacksOpt = Annotated[
    bool,
    typer.Option(
        help="Between rounds, one more py-spy dump of each target, without pausing it "
        "(a second stack sample per round; costs ~20 ms of CPU per target per round).",
    ),
]


def capture(
    pid: PidOpt = None,
    discover: DiscoverOpt = False,
    output: OutputOpt = None,
    samples: SamplesOpt = 3,
    interval: IntervalOpt = 1.0,
    native: NativeOpt = False,
    all_threads: AllThreadsOpt = False,
    nonblocking: NonblockingOpt = False,
    log: LogOpt = None,
    checkpoint_dir: CheckpointDirOpt = None,
    tf_server: TfServerOpt = None,
    tf_trace_ms: TfTraceMsOpt = 500,
    watch_stacks: WatchStacksOpt = False,
    force: ForceOpt = False,
    host: HostOpt = None,
    ssh_option: SshOptionOpt = None,
    via: ViaOpt = None,
    follow_cluster: FollowOpt = False,
    push_py_spy: PushPySpyOpt = False,
    remote_python: RemotePythonOpt = "python3",
    compress: CompressOpt = None,
) -> int:
    """Snapshot live ps and worker processes: stacks, thread states, sockets, logs,
    checkpoint-directory state and TF traces, without harming them.

    A running target is paused for one py-spy dump per round (tens of ms); a stopped one
    is read without resuming it. Exit codes: 0 ok, 2 usage, 3 no such process,
    4 permission, 5 not Python, 6 tool missing, 7 output exists, 8 a target exited,
    9 a --tf-server did not answer, 12 other collector failures, 130 Ctrl-C.
    """
    console = Console(stderr=True, highlight=False)
    pids: list[int] = []
    remote_pids: dict[str, list[int]] = {}
    for text in pid or []:
        number, at = parse_pid_at(text)
        if at is None or at == LOCAL:
            pids.append(number)
        else:
            remote_pids.setdefault(at, []).append(number)
    if host or remote_pids or follow_cluster:
        return _capture_hosts(
            console,
            pids,
            remote_pids,
            list(host or []),
            discover=discover,
            follow_cluster=follow_cluster,
            output=output or default_output(),
            force=force,
            via=via,
            ssh_options=tuple(ssh_option or ()),
            push_py_spy=push_py_spy,
            python=remote_python,
            tf_servers=list(tf_server or []),
            options={
                "samples": samples,
                "interval": interval,
                "native": native,
                "all_threads": all_threads,
                "nonblocking": nonblocking,
                "watch_stacks": watch_stacks,
                "compress": compress,
                "logs": [str(p.resolve()) for p in log or []],
                "checkpoint_dirs": [str(p.resolve()) for p in checkpoint_dir or []],
            },
        )
    if via or ssh_option or push_py_spy:
        raise UsageError("--via, --ssh-option and --push-py-spy apply to --host captures.")
    if discover:
        found = discover_pids()
        listed = ", ".join(map(str, found)) or "none"
        console.print(f"discovered {len(found)} TensorFlow process(es): {listed}")
        _warn_several_jobs(console, found, pids)
        pids += [p for p in found if p not in pids]
        if not pids:
            raise UsageError(
                "--discover found no TensorFlow ps or worker process on this host.",
                help_text="Pass --pid explicitly; run as the user that owns the job (or root).",
            )
    for address in tf_server or []:
        server_host, sep, port = address.rpartition(":")
        if not sep or not server_host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise UsageError(
                f"--tf-server {address!r}: expected HOST:PORT with a port from 1 to 65535, "
                "e.g. 127.0.0.1:2222."
            )
    if tf_server and importlib.util.find_spec("tensorflow") is None:
        raise TensorFlowMissingError("--tf-server traces a TF server, which needs TensorFlow here.")
    unique = list(dict.fromkeys(pids))
    if len(unique) < len(pids):
        console.print(f"note: each pid is captured once ({len(pids) - len(unique)} repeated)")
    pids = unique
    out = output or default_output()
    options = CaptureOptions(
        pids=tuple(pids),
        output=out,
        samples=samples,
        interval=interval,
        native=native,
        all_threads=all_threads,
        nonblocking=nonblocking,
        logs=tuple(log or ()),
        checkpoint_dirs=tuple(checkpoint_dir or ()),
        tf_servers=tuple(tf_server or ()),
        tf_trace_ms=tf_trace_ms,
        watch_stacks=watch_stacks,
        force=force,
        compress=compress,
    )
    options = replace(options, command=command_line(options))
    with Progress(
        TextColumn("capturing {task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    ) as bar:
        task = bar.add_task("", total=samples + 1)

        def progress(what: str, done: int, total: int) -> None:
            bar.update(task, description=what, completed=done, total=total)

        result = run_capture(options, progress)
    print_summary(result, console)
    raise_for_result(result)
    return 0


def _warn_several_jobs(console: Console, found: list[int], named: list[int]) -> None:
    """Several jobs on one host (a shared machine, or a job that has not finished ending)
    are read as one cluster: say so, and how to capture one. The capture goes on: in an
    incident, a dump of too much beats none."""
    groups, _loose = discover_jobs(found)
    if len(groups) < 2 or named:
        return  # one job (and processes that name no cluster), or the user chose pids too
    console.print(
        f"warning: --discover found {len(groups)} TensorFlow jobs on this host (processes "
        "whose cluster specs share no address); they are captured together. To capture "
        "one, pass its processes instead:"
    )
    for group in groups:
        console.print("  " + " ".join(f"--pid {p}" for p in group))


def _capture_hosts(
    console: Console,
    local_pids: list[int],
    remote_pids: dict[str, list[int]],
    hosts: list[str],
    *,
    discover: bool,
    follow_cluster: bool,
    output: Path,
    force: bool,
    via: str | None,
    ssh_options: tuple[str, ...],
    push_py_spy: bool,
    python: str,
    options: dict[str, Any],
    tf_servers: list[str],
) -> int:
    """Every named host (and this one, when it has targets) in parallel, into one dump."""
    if tf_servers:
        raise UsageError(
            "--tf-server is not supported with --host / --follow-cluster yet.",
            help_text="Capture the hosts first, then trace a server with a separate "
            "`postmortem capture --pid PID --tf-server HOST:PORT` on its host.",
        )
    logs = [Path(p) for p in options["logs"]]
    checkpoints = [Path(p) for p in options["checkpoint_dirs"]]
    # Refuse here, with exit 2, what every host would refuse.
    validate_capture(
        CaptureOptions(
            pids=(), output=output, samples=int(options["samples"]),
            interval=float(options["interval"]), logs=tuple(logs),
            checkpoint_dirs=tuple(checkpoints),
        )
    )
    specs: list[HostSpec] = []

    def add(spec: HostSpec) -> HostSpec:
        """The spec for this host: one already named (same host, and the same user and
        port where both say), else this one, added."""
        for index, known in enumerate(specs):
            if known.host == spec.host and (
                not spec.user or not known.user or spec.user == known.user
            ) and (spec.port is None or known.port is None or spec.port == known.port):
                merged = replace(known, pids=(*known.pids, *spec.pids),
                                 discover=known.discover or spec.discover)
                specs[index] = merged
                return merged
        specs.append(spec)
        return spec

    for text in hosts:
        add(parse_host(text))
    for name, numbers in remote_pids.items():
        add(replace(parse_host(name), pids=tuple(numbers)))
    if follow_cluster:
        # From this host's TF processes, or from the ones named on other hosts (PID@HOST).
        start = local_pids or ([] if remote_pids else discover_pids())
        if not local_pids and start:
            _warn_several_jobs(console, start, [])
        if not start and not remote_pids:
            raise UsageError(
                "--follow-cluster starts from the TF processes on this host, and there are none.",
                help_text="Run it on a node of the job, name a process there with --pid "
                "PID@HOST, or name the hosts with --host.",
            )
        named = cluster_hosts(start) if start else {}
        job = {a for pid in start for a in discover_job_addresses(pid)}
        if remote_pids:
            probed, answers = probe_hosts([s for s in specs if s.pids], via, ssh_options, python)
            for answer in answers:
                if answer.status != "ok":
                    console.print(f"  {answer.spec.text}: cannot read its cluster spec: "
                                  f"{answer.reason}", markup=False)
            for host, roles in probed.items():
                mine = named.setdefault(host, [])
                mine.extend(r for r in roles if r not in mine)
            job |= probed_addresses(answers)
            for spec in specs:  # a named host is not "another" host
                named.pop(spec.host, None)
        listed = ", ".join(f"{h} ({', '.join(r)})" for h, r in named.items()) or "none"
        console.print(f"the cluster spec names {len(named)} other host(s): {listed}")
        for name in named:
            add(replace(parse_host(name), discover=True))
        local_pids = list(dict.fromkeys([*local_pids, *start]))
        # The other hosts' --discover keeps this job's processes (a shared host runs others).
        options = {**options, "job_addresses": sorted(job)}
    idle = [s.text for s in specs if not s.pids and not s.discover and not discover]
    if idle:
        raise UsageError(
            f"Nothing to capture on {', '.join(idle)}: no --pid PID@HOST names a process there.",
            help_text="Add --discover to find each host's TF processes, or name them with "
            "--pid PID@HOST.",
        )
    if checkpoints and not (local_pids or logs):
        raise UsageError(
            "--checkpoint-dir with --host watches a directory on this host: name a process "
            "here with --pid (or a --log) as well.",
        )
    if local_pids or logs:
        add(HostSpec(LOCAL, LOCAL, pids=tuple(local_pids)))
    chosen = _unique_names(specs)
    argv = _hosts_command(chosen, discover, output, via, ssh_options, push_py_spy, python,
                          options)
    console.print(f"capturing {len(chosen)} host(s): {', '.join(s.text for s in chosen)}")

    def report(spec: HostSpec, result: HostResult) -> None:
        if result.status == "ok":
            count = len(result.info.get("pids", []))
            console.print(f"  {spec.text}: {count} process(es) in {result.seconds:.1f}s")
            for warning in result.info.get("warnings") or []:
                console.print(f"  {spec.text}: warning: {warning}", markup=False)
        elif result.status == "empty":
            console.print(f"  {spec.text}: reached; nothing to capture: {result.reason}",
                          markup=False)
        else:
            console.print(f"  {spec.text}: not captured: {result.reason}", markup=False)

    result = capture_hosts(
        chosen,
        {**options, "discover": discover},
        output,
        force,
        via=via,
        ssh_options=ssh_options,
        python=python,
        push_py_spy=push_py_spy,
        command=tuple(argv),
        progress=report,
    )
    failed = result.failed
    reasons = "\n  ".join(f"{h.spec.text}: {h.reason}" for h in failed)
    if not any(h.status == "ok" for h in result.hosts):
        if failed:
            raise HostNotCapturedError(f"No host could be captured:\n  {reasons}")
        raise UsageError(
            "No host had a process to capture: "
            + "; ".join(f"{h.spec.text}: {h.reason}" for h in result.hosts),
            help_text="Name the processes with --pid PID@HOST, or add --discover.",
        )
    no_stacks = [
        h.spec.text for h in result.hosts if h.status == "ok" and h.info.get("py_spy") is False
    ]
    if no_stacks:
        console.print(
            f"note: py-spy is missing on {', '.join(no_stacks)}: captured without Python "
            "stacks (--push-py-spy copies this host's py-spy for the run)"
        )
    console.print(f"{len(chosen) - len(failed)} of {len(chosen)} host(s) -> {result.output}")
    if failed:
        raise HostNotCapturedError(
            f"{len(failed)} host(s) not captured (dump kept at {result.output}):\n  {reasons}"
        )
    # A host's own capture problems (a target exited, a collector failed), but for the
    # missing py-spy already said above.
    partial = [
        f"{h.spec.text}: {problem}"
        for h in result.hosts
        if h.status == "ok" and h.info.get("exit_code")
        for problem in h.info.get("problems") or []
        if "py-spy is not installed" not in str(problem)
    ]
    if partial:
        raise PartialCaptureError(
            f"capture finished with problems (dump kept at {result.output}):\n  "
            + "\n  ".join(partial[:10])
        )
    console.print(f"next: postmortem analyze {result.output}")
    return 0


def _unique_names(specs: list[HostSpec]) -> list[HostSpec]:
    """Each host its own directory in the dump: two specs of one host (other ports or
    users) get a suffix."""
    seen: set[str] = set()
    out = []
    for spec in specs:
        name = spec.key
        if name in seen:
            name = f"{spec.key}-{spec.port}" if spec.port is not None else spec.key
            counter = 2
            while name in seen:
                name, counter = f"{spec.key}-{counter}", counter + 1
            spec = replace(spec, name=name)
        seen.add(spec.key)
        out.append(spec)
    return out


def _hosts_command(
    specs: list[HostSpec],
    discover: bool,
    output: Path,
    via: str | None,
    ssh_options: tuple[str, ...],
    push_py_spy: bool,
    python: str,
    options: dict[str, Any],
) -> list[str]:
    """The command that captures these hosts again (--follow-cluster resolved)."""
    argv = ["postmortem", "capture"]
    for spec in specs:
        if not spec.local:
            argv += ["--host", spec.text]
        at = "" if spec.local else f"@{spec.text}"
        argv += [f"--pid={p}{at}" for p in spec.pids]
    if discover or any(s.discover for s in specs):
        argv.append("--discover")
    argv += ["--samples", str(options["samples"]), "--interval", str(options["interval"])]
    for flag in ("native", "all_threads", "nonblocking", "watch_stacks"):
        if options.get(flag):
            argv.append("--" + flag.replace("_", "-"))
    argv += [a for p in options["logs"] for a in ("--log", str(p))]
    argv += [a for p in options["checkpoint_dirs"] for a in ("--checkpoint-dir", str(p))]
    argv += [a for o in ssh_options for a in ("--ssh-option", o)]
    if via:
        argv += ["--via", via]
    if push_py_spy:
        argv.append("--push-py-spy")
    if python != "python3":
        argv += ["--remote-python", python]
    return [*argv, "-o", str(output)]


def command_line(options: CaptureOptions) -> tuple[str, ...]:
    """The command that reproduces this capture (the same pids, --discover resolved).

    Rebuilt from the parsed options rather than sys.argv, which is not ours when the CLI
    is called in-process (postmortem.cli.main(argv)).
    """
    argv = ["postmortem", "capture"]
    for pid in options.pids:
        argv += ["--pid", str(pid)]
    argv += ["--samples", str(options.samples), "--interval", str(options.interval)]
    for flag, on in (
        ("--native", options.native),
        ("--all-threads", options.all_threads),
        ("--nonblocking", options.nonblocking),
        ("--watch-stacks", options.watch_stacks),
        ("--force", options.force),
    ):
        if on:
            argv.append(flag)
    if options.compress is not None:
        argv.append("--compress" if options.compress else "--no-compress")
    for path in options.logs:
        argv += ["--log", str(path)]
    for directory in options.checkpoint_dirs:
        argv += ["--checkpoint-dir", str(directory)]
    for address in options.tf_servers:
        argv += ["--tf-server", address]
    if options.tf_servers:
        argv += ["--tf-trace-ms", str(options.tf_trace_ms)]
    return (*argv, "-o", str(options.output))


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
        reason = last.get((target, collector), "")[:80]
        table.add_row(target, collector, str(ok), str(failed), reason)
    console.print(table)
    rounds = len(manifest["rounds"])
    console.print(
        f"{len(manifest['targets'])} process(es), {rounds} round(s) "
        f"in {manifest['ended_at'] - manifest['started_at']:.1f}s -> {result.output}"
    )
    if result.exit_code == ExitCode.OK:
        console.print(f"next: postmortem analyze {result.output}")


def raise_for_result(result: CaptureResult) -> None:
    if result.interrupted:
        raise CaptureInterruptedError(
            f"Interrupted: {result.output} keeps the {len(result.manifest['rounds'])} round(s) "
            "captured so far."
        )
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
    raise kinds[code](f"capture finished with problems (dump kept at {result.output}):\n  {lines}")
