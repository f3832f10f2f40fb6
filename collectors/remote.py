"""The capture side on a remote host: shipped to the remote Python on stdin, run there,
results streamed back on stdout. Standard library only, like every collector.

`postmortem capture --host H` (postmortem/multihost.py) runs, through ssh or any remote
shell, `python3 -c BOOTSTRAP`. The bootstrap reads one JSON header line and a zip of the
`collectors` package (a zipapp) from stdin into a fresh temporary directory, imports this
module from the zip and calls `main`; the directory is removed whatever happens, so nothing
is left on the host.

The conversation on the agent's stdout, one line each, then the dump:
  C <seq>            asks the local side for its clock; it answers "T <seq> <time>" on stdin
  R <json>           the result: host facts, clock samples, problems, exit code
  TAR <bytes>        then exactly that many bytes: the dump directory as a tar
Anything else the agent has to say goes to stderr.
"""

from __future__ import annotations

import io
import json
import os
import socket
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, BinaryIO

# What the local side sends on stdin first: {"zip": N, "py_spy": M, "options": {...}}, then
# N bytes of zip, then M bytes of a py-spy binary (--push-py-spy), then clock answers.
BOOTSTRAP = r"""
import json, os, shutil, signal, sys, tempfile
if sys.version_info < (3, 10):
    sys.stderr.write("postmortem: the remote python3 is %d.%d; capture needs 3.10 or newer\n"
                     % sys.version_info[:2])
    sys.exit(6)
def _end(signum, frame):
    raise KeyboardInterrupt  # as Ctrl-C: the capture stops, re-stops what it resumed
for _sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, _end)
stdin = sys.stdin.buffer
header = json.loads(stdin.readline())
work = tempfile.mkdtemp(prefix="postmortem-agent-")
try:
    path = os.path.join(work, "agent.zip")
    with open(path, "wb") as f:
        f.write(stdin.read(header["zip"]))
    sys.path.insert(0, path)
    from collectors.remote import main
    code = main(header, work, stdin)
except (KeyboardInterrupt, BrokenPipeError):
    sys.stderr.write("postmortem: capture stopped: the local side ended or interrupted it\n")
    code = 130
finally:
    shutil.rmtree(work, ignore_errors=True)
sys.exit(code)
"""

EXIT_NOTHING_FOUND = 3  # --discover found no TF process on this host
EXIT_FAILED = 1


_PROTOCOL: BinaryIO = sys.stdout.buffer  # the conversation; print() goes to stderr


def _say(line: str) -> None:
    _PROTOCOL.write(line.encode() + b"\n")
    _PROTOCOL.flush()


def host_addresses() -> list[str]:
    """Every IPv4 address of this network namespace (/proc/net/fib_trie, local /32s)."""
    found: list[str] = []
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        return found
    last = ""
    for line in lines:
        text = line.strip()
        if text.startswith("|-- "):
            last = text[4:].strip()
        elif "/32 host LOCAL" in text and last and last not in found:
            found.append(last)
    return found


class Clock:
    """Offsets of the local side's clock from this host's, one exchange per round: the
    local time the answer carries against the middle of the round trip."""

    def __init__(self, stdin: BinaryIO) -> None:
        self.stdin = stdin
        self.samples: list[dict[str, Any]] = []

    def exchange(self, label: str) -> None:
        seq = len(self.samples)
        sent = time.time()
        _say(f"C {seq}")
        raw = self.stdin.readline()
        got = time.time()
        if not raw:  # the local side is gone (ended, interrupted): stop, as on Ctrl-C
            raise KeyboardInterrupt
        line = raw.decode(errors="replace").split()
        if len(line) != 3 or line[0] != "T" or line[1] != str(seq):
            return
        try:
            local = float(line[2])
        except ValueError:
            return
        self.samples.append(
            {"at": label, "offset": local - (sent + got) / 2, "rtt": got - sent, "time": sent}
        )


def _pack(directory: Path) -> bytes:
    """The dump as a tar: regular files and directories only."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                continue
            tar.add(str(path), arcname=str(path.relative_to(directory)), recursive=False)
    return buffer.getvalue()


def main(header: dict[str, Any], work: str, stdin: BinaryIO) -> int:
    global _PROTOCOL
    _PROTOCOL = sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the conversation on stdout
    options = header.get("options") or {}
    if header.get("py_spy"):  # sent right after the zip, before any clock answer
        binary = os.path.join(work, "py-spy")
        with open(binary, "wb") as f:
            f.write(stdin.read(int(header["py_spy"])))
        os.chmod(binary, 0o700)
        os.environ["POSTMORTEM_PY_SPY"] = binary  # pushed for this run, removed with it
    clock = Clock(stdin)
    clock.exchange("start")
    result: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "addresses": host_addresses(),
        "python": sys.version.split()[0],
        "problems": [],
        "exit_code": 0,
    }
    try:
        code = _capture(options, Path(work) / "dump", clock, result)
    except Exception as exc:  # noqa: BLE001 - reported to the local side, not a traceback
        result["problems"].append(f"{type(exc).__name__}: {exc}")
        code = getattr(exc, "exit_code", EXIT_FAILED)
    result["exit_code"] = int(code)
    result["clock"] = clock.samples
    _say("R " + json.dumps(result))
    dump = Path(work) / "dump"
    data = _pack(dump) if (dump / "manifest.json").is_file() else b""
    _say(f"TAR {len(data)}")
    _PROTOCOL.write(data)
    _PROTOCOL.flush()
    return 0


LOOPBACK = ("127.0.0.1", "localhost", "0.0.0.0", "::1")


def cluster_hosts(pids: list[int]) -> dict[str, list[str]]:
    """Hosts named by the cluster specs (--ps_hosts/--worker_hosts, TF_CONFIG) of these
    processes -> the roles that live there; this host's own names and addresses left out."""
    from collectors import clusterspec, procfs

    name = socket.gethostname()
    own = {*LOOPBACK, name, name.split(".")[0], *host_addresses()}

    def mine(host: str) -> bool:
        # a fully qualified or service name of this host ("worker-0.ns.svc" on worker-0)
        return host in own or (any(c.isalpha() for c in host) and host.split(".")[0] in own)

    found: dict[str, list[str]] = {}
    for pid in pids:
        try:
            args = procfs.read_cmdline(pid)
            env, _ = procfs.read_env(pid)
        except OSError:
            continue
        for job, addresses in clusterspec.cluster_spec(args[1:], env).items():
            for index, address in enumerate(addresses):
                host = clusterspec.host_of(address)
                if host and not mine(host):
                    roles = found.setdefault(host, [])
                    if f"{job}:{index}" not in roles:
                        roles.append(f"{job}:{index}")
    return found


def _capture(options: dict[str, Any], output: Path, clock: Clock, result: dict[str, Any]) -> int:
    from collectors.capture import CaptureOptions, capture
    from collectors.discover import discover, job_addresses, jobs
    from collectors.tools import find_tool

    pids = [int(p) for p in options.get("pids") or []]
    if options.get("discover"):
        found = [p for p in discover() if p not in pids]
        job = set(options.get("job_addresses") or [])
        if job:  # --follow-cluster: only this job's processes (a shared host runs others)
            found = [p for p in found if job_addresses(p) & job]
        else:
            groups, _ = jobs(found)
            if len(groups) > 1:  # said, and captured together (as on one host)
                listed = "; ".join(" ".join(map(str, g)) for g in groups)
                result["warnings"] = [
                    f"--discover found {len(groups)} TensorFlow jobs on this host ({listed}); "
                    "captured together: name one job's processes with --pid PID@HOST"
                ]
        pids += found
    result["pids"] = pids
    if options.get("probe"):  # --follow-cluster from a named process: its spec, no capture
        result["cluster_hosts"] = cluster_hosts(pids)
        result["job_addresses"] = sorted({a for pid in pids for a in job_addresses(pid)})
        return 0
    logs = tuple(Path(p) for p in options.get("logs") or [])
    if not pids and not logs:
        result["problems"].append("no TensorFlow process found on this host (--discover)")
        return EXIT_NOTHING_FOUND
    result["py_spy"] = find_tool("py-spy") is not None
    capture_options = CaptureOptions(
        pids=tuple(pids),
        output=output,
        samples=int(options.get("samples", 3)),
        interval=float(options.get("interval", 1.0)),
        native=bool(options.get("native")),
        all_threads=bool(options.get("all_threads")),
        nonblocking=bool(options.get("nonblocking")),
        logs=logs,
        checkpoint_dirs=tuple(Path(p) for p in options.get("checkpoint_dirs") or []),
        watch_stacks=bool(options.get("watch_stacks")),
        force=True,
        command=tuple(options.get("command") or ()),
        require_py_spy=False,  # a host without py-spy is captured without stacks
        compress=options.get("compress"),
    )

    def progress(what: str, done: int, total: int) -> None:
        if what.startswith("round "):
            clock.exchange(what)

    done = capture(capture_options, progress)
    result["problems"] += [p.message for p in done.problems]
    return int(done.exit_code)
