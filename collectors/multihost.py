"""Capture every host of a cluster at once, into one dump.

For each host, in parallel: start the remote Python through OpenSSH (BatchMode, the user's
~/.ssh/config) or any remote shell (`--via 'kubectl exec -i -n NS {host} --'`), send it the
collectors as a zip on stdin (collectors/remote.py), answer its clock questions, and unpack
the dump it streams back into `hosts/<name>/` of the output. Nothing is installed on the
remote host and nothing is left there: the agent runs from a temporary directory it removes.

A host that cannot be reached (refused, timed out, host key unknown, auth refused) is
recorded with ssh's reason; the others go on. The top manifest (schema 4) lists the hosts,
how each went, its addresses and the clock offsets measured at every round.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from collectors.dump import OutputPlan, unwritable
from collectors.layout import FORMAT_NAME, MANIFEST
from collectors.remote import BOOTSTRAP, EXIT_NOTHING_FOUND
from collectors.tools import find_tool
from postmortem import __version__
from postmortem.errors import UsageError

MULTI_HOST_SCHEMA = 4
HOSTS_DIR = "hosts"
LOCAL = "local"  # the host postmortem runs on: the agent runs as a child, no ssh
CONNECT_TIMEOUT = 10  # seconds for ssh to connect
SETUP_ALLOWANCE = 60.0  # seconds on top of the rounds: connect, start Python, pack, copy
ROUND_ALLOWANCE = 30.0  # seconds a round may take on a host (bounded collectors)
NATIVE_ALLOWANCE = 120.0  # more with --native / --all-threads
MAX_DUMP_BYTES = 4 << 30  # a host's dump larger than this is refused
MAX_DUMP_FILES = 200_000
NAME = re.compile(r"[^A-Za-z0-9._-]")
# What a host name or address may hold (what ssh hands a ProxyCommand's %h, never a shell's
# metacharacter) and a user name.
HOST_CHARS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:%-]*")
USER_CHARS = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class HostSpec:
    """One host to capture: `[user@]host[:port]`, or `local`."""

    text: str
    host: str
    user: str = ""
    port: int | None = None
    pids: tuple[int, ...] = ()
    discover: bool = False
    name: str = ""  # its directory in the dump, when the host's own would collide

    @property
    def local(self) -> bool:
        return self.host == LOCAL

    @property
    def key(self) -> str:
        """The host's directory and name in the dump."""
        return NAME.sub("_", self.name or self.host) or "host"


def parse_host(text: str) -> HostSpec:
    """`[user@]host[:port]` ([v6]:port for IPv6); a clear error for anything else."""
    value = text.strip()
    user, _, rest = value.rpartition("@")
    port: int | None = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = _port(text, tail[1:])
    elif rest.count(":") == 1:
        host, _, tail = rest.partition(":")
        port = _port(text, tail)
    else:
        host = rest
    if not host or not HOST_CHARS.fullmatch(host) or (user and not USER_CHARS.fullmatch(user)):
        raise UsageError(
            f"--host {text!r}: expected [USER@]HOST[:SSHPORT], e.g. ubuntu@10.0.0.5:22.",
        )
    return HostSpec(value, host, user, port)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise UsageError(f"--host {text!r}: the ssh port must be a number from 1 to 65535.")
    return int(value)


def parse_pid_at(text: str) -> tuple[int, str | None]:
    """`PID` or `PID@HOST`."""
    pid, sep, host = text.partition("@")
    if not pid.isdigit() or (sep and not host):
        raise UsageError(f"--pid {text!r}: expected a process id, or PID@HOST.")
    return int(pid), (host if sep else None)


# -- the remote command ----------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def agent_zip() -> bytes:
    """The collectors package (and the two small postmortem modules it uses), zipped: the
    remote Python imports it straight from the zip."""
    root = Path(__file__).resolve().parent.parent
    sources = [(p, f"collectors/{p.name}") for p in sorted((root / "collectors").glob("*.py"))]
    sources += [(root / "postmortem" / n, f"postmortem/{n}") for n in ("__init__.py", "errors.py")]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, name in sources:
            source = path.read_bytes()
            zf.writestr(name, source)
            # Compiled for this Python as well (an unchecked hash-based .pyc beside the
            # source, which zipimport reads): a remote Python of the same version skips
            # compiling ~3,000 lines at every capture; any other version compiles the .py.
            code = compile(source, name, "exec", dont_inherit=True)
            zf.writestr(name + "c", _pyc(code, source))
    return buffer.getvalue()


def _pyc(code: Any, source: bytes) -> bytes:
    import importlib.util
    import marshal

    flags = 0b01  # hash-based, not checked against the source (PEP 552)
    return (
        importlib.util.MAGIC_NUMBER
        + flags.to_bytes(4, "little")
        + importlib.util.source_hash(source)
        + marshal.dumps(code)
    )


def remote_argv(
    spec: HostSpec, via: str | None, ssh_options: tuple[str, ...], python: str
) -> list[str]:
    """The command that runs the agent on the host."""
    command = [python, "-c", BOOTSTRAP]
    if spec.local:
        return [sys.executable, "-c", BOOTSTRAP]
    if via:
        shell = " ".join(shlex.quote(a) for a in command)
        argv = []
        templated = False
        for part in shlex.split(via):
            if "{command}" in part:
                part = part.replace("{command}", shell)
                templated = True
            argv.append(part.replace("{host}", spec.host))
        return argv if templated else [*argv, *command]
    argv = [
        "ssh",
        "-T",
        "-o",
        "BatchMode=yes",
        "-o",
        f"ConnectTimeout={CONNECT_TIMEOUT}",
    ]
    for option in ssh_options:
        argv += ["-o", option]
    if spec.port is not None:
        argv += ["-p", str(spec.port)]
    target = f"{spec.user}@{spec.host}" if spec.user else spec.host
    # ssh runs the command through the remote user's shell: one quoted string.
    return [*argv, "--", target, " ".join(shlex.quote(a) for a in command)]


# -- one host --------------------------------------------------------------------------------


@dataclass
class HostResult:
    spec: HostSpec
    # "ok"; "empty": reached, and no process to capture there (--discover found none, or
    # the named pids are gone); "failed": not reached or no dump came back (`reason`)
    status: str = "failed"
    reason: str = ""
    exit_code: int | None = None
    info: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def manifest_entry(self) -> dict[str, Any]:
        return {
            "name": self.spec.key,
            "address": self.spec.text,
            "status": self.status,
            "reason": self.reason,
            "exit_code": self.exit_code,
            "dir": f"{HOSTS_DIR}/{self.spec.key}" if self.status == "ok" else None,
            "hostname": self.info.get("hostname", ""),
            "addresses": self.info.get("addresses", []),
            "clock": self.info.get("clock", []),
            "py_spy": self.info.get("py_spy"),
            "pids": self.info.get("pids", []),
            "problems": self.info.get("problems", []),
            "seconds": round(self.seconds, 3),
        }


def _ssh_reason(stderr: str, code: int | None) -> str:
    """The line of ssh's stderr that says why, in its own words."""
    lines = [
        line.strip()
        for line in stderr.splitlines()
        if line.strip() and not line.startswith("Warning: Permanently added")
    ]
    for line in reversed(lines):
        if line.startswith(("ssh:", "Host key verification failed", "Permission denied")) or (
            "REMOTE HOST IDENTIFICATION" in line or "No route to host" in line
        ):
            return line
    if lines:
        return lines[-1][:300]
    return f"the remote command ended with exit code {code} and said nothing"


def _extract(data: bytes, into: Path) -> None:
    """Unpack a host's dump: regular files and directories only, every path inside `into`."""
    count = 0
    total = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for member in tar:
            name = member.name
            parts = Path(name).parts
            if not name or name.startswith("/") or ".." in parts or "\\" in name:
                raise ValueError(f"a path outside the dump: {name!r}")
            count += 1
            total += max(0, member.size)
            if count > MAX_DUMP_FILES or total > MAX_DUMP_BYTES:
                raise ValueError("the host's dump is larger than postmortem accepts")
            target = into / name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    continue
                with open(target, "wb") as out:
                    out.write(source.read())
            # links, devices and FIFOs are dropped


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def run_host(
    spec: HostSpec,
    argv: list[str],
    header: dict[str, Any] | Callable[[], tuple[dict[str, Any], bytes]],
    payload: bytes,
    into: Path,
    timeout: float,
    stop: threading.Event,
) -> HostResult:
    """Run the agent on one host and unpack its dump into `into`; never raises. `header`
    may be a function giving (header, payload): called once the remote command started,
    so that building the zip overlaps the connection's setup."""
    result = HostResult(spec)
    started = time.monotonic()
    try:
        proc = subprocess.Popen(  # noqa: S603 - argv built by us
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # ended by process group, never by name
        )
    except OSError as exc:
        result.reason = f"cannot run {argv[0]}: {exc.strerror or exc}"
        return result
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stderr_chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: stderr_chunks.append(proc.stderr.read() if proc.stderr else b""),
        daemon=True,
    )
    reader.start()
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _end_group(proc)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    watcher = threading.Thread(target=_end_on_stop, args=(proc, stop), daemon=True)
    watcher.start()
    try:
        if callable(header):
            header, payload = header()
        try:
            proc.stdin.write(json.dumps(header).encode() + b"\n" + payload)
            proc.stdin.flush()
        except BrokenPipeError:
            pass  # the remote command already ended (ssh refused): its stderr says why
        while True:
            line = proc.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip("\n")
            if text.startswith("C "):
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(f"T {text[2:].strip()} {time.time():.6f}\n".encode())
                    proc.stdin.flush()
            elif text.startswith("R "):
                info = json.loads(text[2:])
                result.info = info if isinstance(info, dict) else {}
            elif text.startswith("TAR "):
                size = int(text[4:])
                if not 0 <= size <= MAX_DUMP_BYTES:
                    raise ValueError(f"a dump of {size:,} bytes: more than postmortem accepts")
                data = _read_exact(proc.stdout, size)
                if not size and "cluster_hosts" in result.info:
                    result.status = "ok"  # a probe: no dump, by design
                elif not size and result.info.get("exit_code") == EXIT_NOTHING_FOUND:
                    # reached, and nothing to capture there: not a failure of the host
                    result.status = "empty"
                    result.reason = "; ".join(map(str, result.info.get("problems") or []))
                elif size and len(data) == size:
                    try:
                        _extract(data, into)
                    except (ValueError, OSError, tarfile.TarError):
                        shutil.rmtree(into, ignore_errors=True)  # no half dump in the output
                        raise
                    result.status = "ok"
                elif size:
                    result.reason = (
                        f"the connection ended after {len(data):,} of the dump's {size:,} bytes"
                    )
                break
    except (OSError, ValueError, json.JSONDecodeError, tarfile.TarError) as exc:
        result.reason = f"the host's answer could not be read: {exc}"
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            _end_group(proc)
            proc.wait(timeout=10)
        timer.cancel()
        reader.join(5)
    result.exit_code = proc.returncode
    result.seconds = time.monotonic() - started
    stderr = b"".join(stderr_chunks).decode(errors="replace")
    if result.status == "failed" and not result.reason:
        if stop.is_set():
            result.reason = "interrupted"
        elif timed_out.is_set():
            result.reason = f"timed out after {timeout:.0f}s"
        elif result.info.get("problems"):
            result.reason = "; ".join(map(str, result.info["problems"]))[:500]
        else:
            result.reason = _ssh_reason(stderr, proc.returncode)
    return result


def _end_group(proc: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """End the remote command: SIGTERM first, so that an agent running here (or a remote
    shell passing the signal on) removes its temporary directory; SIGKILL after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _end_on_stop(proc: subprocess.Popen[bytes], stop: threading.Event) -> None:
    while proc.poll() is None:
        if stop.wait(0.2):
            _end_group(proc)
            return


# -- every host ------------------------------------------------------------------------------


@dataclass
class MultiResult:
    output: Path
    hosts: list[HostResult]
    manifest: dict[str, Any]

    @property
    def failed(self) -> list[HostResult]:
        return [h for h in self.hosts if h.status == "failed"]


def capture_hosts(
    specs: list[HostSpec],
    options: dict[str, Any],
    output: Path,
    force: bool,
    via: str | None = None,
    ssh_options: tuple[str, ...] = (),
    python: str = "python3",
    push_py_spy: bool = False,
    command: tuple[str, ...] = (),
    progress: Any = None,
) -> MultiResult:
    """Capture every host in parallel into one dump at `output`."""
    plan = OutputPlan.prepare(output, force)
    binary = b""
    if push_py_spy:
        found = find_tool("py-spy")
        if found is None:
            raise UsageError("--push-py-spy: py-spy is not installed here: none to copy.")
        binary = Path(found).read_bytes()
    rounds = int(options.get("samples", 3))
    # A round waits at most for procfs, py-spy and the checkpoint listings, each bounded
    # (collectors/capture.py); native stacks take minutes on a big process.
    per_round = ROUND_ALLOWANCE + (NATIVE_ALLOWANCE if options.get("native")
                                   or options.get("all_threads") else 0.0)
    timeout = rounds * (float(options.get("interval", 1.0)) + per_round) + SETUP_ALLOWANCE
    stop = threading.Event()
    results: list[HostResult] = [HostResult(s) for s in specs]
    started = time.time()

    def one(index: int, spec: HostSpec) -> None:
        host_options = {
            **options,
            "pids": list(spec.pids),
            "discover": bool(options.get("discover")) or spec.discover,
            "command": list(command),
        }
        if not spec.local:  # paths on this host mean nothing there
            host_options["logs"] = []
            host_options["checkpoint_dirs"] = []

        def prepare() -> tuple[dict[str, Any], bytes]:
            payload = agent_zip()
            header = {
                "zip": len(payload),
                "py_spy": len(binary) if binary and not spec.local else 0,
                "options": host_options,
            }
            return header, payload + (binary if header["py_spy"] else b"")

        argv = remote_argv(spec, via, ssh_options, python)
        results[index] = run_host(
            spec, argv, prepare, b"", plan.build / HOSTS_DIR / spec.key, timeout, stop
        )
        if progress is not None:
            progress(spec, results[index])

    threads = [
        threading.Thread(target=one, args=(i, s), name=f"postmortem-host-{s.key}", daemon=True)
        for i, s in enumerate(specs)
    ]
    interrupted = False
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    except KeyboardInterrupt:  # keep the hosts that finished, as an incomplete dump
        interrupted = True
        stop.set()
        for thread in threads:
            thread.join(15)
    manifest = {
        "format": FORMAT_NAME,
        "schema_version": MULTI_HOST_SCHEMA,
        "tool_version": __version__,
        "host": socket.gethostname(),
        "multi_host": True,
        "started_at": started,
        "ended_at": time.time(),
        "complete": not interrupted,
        "command": list(command),
        "options": options,
        "hosts": [r.manifest_entry() for r in results],
        "targets": [],
        "rounds": [],
        "outcomes": [],
    }
    try:
        (plan.build / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if not any(r.status == "ok" for r in results):
            plan.abort()
        else:
            plan.commit()
    except OSError as exc:
        plan.abort()
        raise unwritable(plan.final, exc) from None
    if interrupted:
        raise KeyboardInterrupt
    return MultiResult(plan.final, results, manifest)


# -- following the cluster -------------------------------------------------------------------


def probe_hosts(
    specs: list[HostSpec], via: str | None, ssh_options: tuple[str, ...], python: str
) -> tuple[dict[str, list[str]], list[HostResult]]:
    """The hosts the cluster specs of named remote processes (--pid PID@HOST) name: each
    host's agent reads its processes' flags and TF_CONFIG and captures nothing."""
    stop = threading.Event()
    results: list[HostResult] = [HostResult(s) for s in specs]

    def one(index: int, spec: HostSpec) -> None:
        def prepare() -> tuple[dict[str, Any], bytes]:
            payload = agent_zip()
            options = {"probe": True, "pids": list(spec.pids)}
            return {"zip": len(payload), "py_spy": 0, "options": options}, payload

        argv = remote_argv(spec, via, ssh_options, python)
        results[index] = run_host(spec, argv, prepare, b"", Path("/nonexistent"), 60, stop)

    threads = [threading.Thread(target=one, args=(i, s), daemon=True) for i, s in enumerate(specs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    named: dict[str, list[str]] = {}
    for result in results:
        for host, roles in (result.info.get("cluster_hosts") or {}).items():
            mine = named.setdefault(str(host), [])
            mine.extend(r for r in roles if r not in mine)
    return named, results


def probed_addresses(results: list[HostResult]) -> set[str]:
    """The cluster addresses the probed processes' specs name: their job's."""
    return {str(a) for r in results for a in r.info.get("job_addresses") or []}
