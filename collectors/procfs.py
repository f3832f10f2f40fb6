"""Read what the kernel knows about a process: no attaching, nothing written.

Everything here is a read of /proc. Reads that could reach a hung filesystem (the size of
an open file on a stuck NFS or FUSE mount) are made by the caller under a time bound.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

PROC = Path("/proc")
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# Only these environment variables are kept: the environment holds secrets.
ENV_ALLOWLIST_PREFIXES = (
    "TF_",
    "GRPC_",
    "CUDA_VISIBLE_DEVICES",
    "PYTHON",
    "KUBERNETES_POD_NAME",
    "POSTMORTEM_",
    "TMPDIR",
)
ENV_DENY_SUBSTRINGS = ("TOKEN", "SECRET", "PASSWORD", "KEY", "CREDENTIAL")

TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def exists(pid: int) -> bool:
    return (PROC / str(pid)).exists()


def _read_text(path: Path) -> str:
    return path.read_text(errors="replace")


def parse_stat(text: str) -> dict[str, Any]:
    """Parse /proc/PID/stat or /proc/PID/task/TID/stat (comm may hold spaces and parens)."""
    open_paren = text.index("(")
    close_paren = text.rindex(")")
    comm = text[open_paren + 1 : close_paren]
    rest = text[close_paren + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return {
        "comm": comm,
        "state": rest[0],
        "ppid": int(rest[1]),
        "pgid": int(rest[2]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "num_threads": int(rest[17]),
        "starttime": int(rest[19]),
    }


def thread_group(pid: int) -> int | None:
    """The process a task id belongs to (its Tgid): the id itself for a process."""
    try:
        for line in _read_text(PROC / str(pid) / "status").splitlines():
            if line.startswith("Tgid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def read_state(pid: int) -> str | None:
    """The process state letter (R, S, D, T, t, Z, ...), or None when it is gone."""
    try:
        return str(parse_stat(_read_text(PROC / str(pid) / "stat"))["state"])
    except (FileNotFoundError, ProcessLookupError):
        return None


def read_comm(pid: int) -> str:
    try:
        return str(parse_stat(_read_text(PROC / str(pid) / "stat"))["comm"])
    except (OSError, ValueError):
        return "?"


def read_cmdline(pid: int) -> list[str]:
    raw = (PROC / str(pid) / "cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def read_env(pid: int) -> tuple[dict[str, str], str]:
    """The allow-listed environment, and an error text when it could not be read."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except PermissionError:
        return {}, "permission denied reading environ"
    except OSError as exc:
        return {}, str(exc)
    env: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.decode(errors="replace").partition("=")
        if not sep or not key.startswith(ENV_ALLOWLIST_PREFIXES):
            continue
        if any(word in key.upper() for word in ENV_DENY_SUBSTRINGS):
            continue
        env[key] = value
    return env, ""


def is_readable(pid: int) -> bool:
    """Whether we may read the memory map: the ptrace read check py-spy needs too."""
    try:
        with open(PROC / str(pid) / "maps", "rb") as handle:
            handle.read(1)
        return True
    except PermissionError:
        return False


def looks_like_python(pid: int) -> bool | None:
    """True/False from the memory map; None when the map cannot be read."""
    try:
        maps = _read_text(PROC / str(pid) / "maps")
    except PermissionError:
        return None
    if "python" in maps.lower():
        return True
    try:
        exe = os.readlink(PROC / str(pid) / "exe")
    except OSError:
        exe = ""
    return "python" in os.path.basename(exe).lower()


def loads_tensorflow(pid: int) -> bool:
    try:
        maps = _read_text(PROC / str(pid) / "maps")
    except OSError:
        return False
    return "libtensorflow_framework" in maps or "_pywrap_tensorflow" in maps


def _read_small(path: str) -> str:
    """A small /proc file, read with one system call (pathlib's read_text costs 4x)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 4096).decode(errors="replace")
    finally:
        os.close(fd)


def read_threads(pid: int) -> list[dict[str, Any]]:
    threads = []
    base = f"/proc/{pid}/task"
    for tid in sorted(int(name) for name in os.listdir(base)):
        where = f"{base}/{tid}"
        try:
            stat = parse_stat(_read_small(f"{where}/stat"))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue  # the thread ended between listing and reading
        try:
            wchan = _read_small(f"{where}/wchan").strip()
        except OSError:
            wchan = ""
        record: dict[str, Any] = {
            "tid": tid,
            "name": stat["comm"],
            "state": stat["state"],
            "wchan": wchan if wchan != "0" else "",
            "utime": stat["utime"],
            "stime": stat["stime"],
        }
        if stat["state"] == "D":
            # Where in the kernel it waits (e.g. fuse_perform_write, nfs_file_write): the
            # only stack of a thread no tool can stop. Readable as root only.
            try:
                record["kernel_stack"] = _read_text(Path(where) / "stack").splitlines()[:32]
            except OSError:
                pass
        threads.append(record)
    return threads


VOLUNTARY = b"voluntary_ctxt_switches:"
NONVOLUNTARY = b"nonvoluntary_ctxt_switches:"


def read_switches(pid: int, tid: int) -> tuple[int, int] | None:
    """(voluntary, involuntary) context switches of one thread, from its status file;
    None when it has ended. A thread blocked for good does not switch at all."""
    try:
        fd = os.open(f"/proc/{pid}/task/{tid}/status", os.O_RDONLY)
        try:
            data = os.read(fd, 8192)
        finally:
            os.close(fd)
    except OSError:
        return None
    voluntary = data.find(b"\n" + VOLUNTARY)
    involuntary = data.find(NONVOLUNTARY)
    if voluntary < 0 or involuntary < 0:
        return None
    try:
        first = int(data[voluntary + 1 + len(VOLUNTARY) :].split(b"\n", 1)[0])
        second = int(data[involuntary + len(NONVOLUNTARY) :].split(b"\n", 1)[0])
    except ValueError:
        return None
    return first, second


def read_io(pid: int) -> dict[str, int]:
    try:
        text = _read_text(PROC / str(pid) / "io")
    except OSError:
        return {}
    result = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            result[key.strip()] = int(value)
    return result


def _decode_addr(hex_addr: str) -> str:
    ip_hex, port_hex = hex_addr.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        # Four little-endian 32-bit words.
        words = struct.unpack("<4I", raw)
        packed = struct.pack(">4I", *words)
        ip = socket.inet_ntop(socket.AF_INET6, packed)
        if ip.startswith("::ffff:") and "." in ip:
            ip = ip[len("::ffff:") :]
    return f"{ip}:{port}"


NET_CACHE_SECONDS = 1.0  # one round reads a network namespace's tables once, for all targets
_net_cache: dict[Any, tuple[float, dict[int, tuple[str, list[bytes]]], list[str]]] = {}
_net_lock = threading.Lock()


def _net_namespace(pid: int) -> Any:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return ("pid", pid)


def _net(pid: int) -> tuple[dict[int, tuple[str, list[bytes]]], list[str]]:
    """Socket inode -> (proto, raw fields), and every listening address, of the process's
    network namespace. A busy host's tables hold thousands of sockets (3 ms a read): each is
    read once a round for every target in the namespace, and decoded only where needed."""
    key = _net_namespace(pid)
    now = time.monotonic()
    with _net_lock:
        hit = _net_cache.get(key)
        if hit is not None and now - hit[0] < NET_CACHE_SECONDS:
            return hit[1], hit[2]
    raw: dict[int, tuple[str, list[bytes]]] = {}
    listening: set[str] = set()
    for proto in ("tcp", "tcp6"):
        try:
            with open(PROC / str(pid) / "net" / proto, "rb") as handle:
                lines = handle.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            try:
                raw[int(fields[9])] = (proto, fields)
                if fields[3] == b"0A":
                    listening.add(_decode_addr(fields[1].decode()))
            except ValueError:
                continue
    result = (raw, sorted(listening))
    with _net_lock:
        _net_cache[key] = (now, *result)
    return result


def _socket_entry(proto: str, fields: list[bytes]) -> dict[str, Any]:
    tx_hex, rx_hex = fields[4].split(b":")
    state = fields[3].decode()
    return {
        "proto": proto,
        "local": _decode_addr(fields[1].decode()),
        "remote": _decode_addr(fields[2].decode()),
        "tcp_state": TCP_STATES.get(state, state),
        "tx_queue": int(tx_hex, 16),
        "rx_queue": int(rx_hex, 16),
    }


def read_net_table(pid: int) -> dict[int, dict[str, Any]]:
    """Socket inode -> TCP entry, from the process's own network namespace."""
    raw, _ = _net(pid)
    return {inode: _socket_entry(proto, fields) for inode, (proto, fields) in raw.items()}


def host_listening(pid: int) -> list[str]:
    """Every listening address in the process's network namespace, not only its own."""
    return _net(pid)[1]


def read_fds(
    pid: int, stat_files: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Open files (with sizes) and TCP sockets of a process.

    For a listening socket rx_queue is the accept backlog; for a connection it is the
    bytes the process has not read: both say a process stopped answering.
    """
    fd_dir = PROC / str(pid) / "fd"
    files: list[dict[str, Any]] = []
    sockets: list[dict[str, Any]] = []
    net: dict[int, tuple[str, list[bytes]]] | None = None
    for entry in fd_dir.iterdir():
        try:
            target = os.readlink(entry)
        except OSError:
            continue
        fd = int(entry.name)
        if target.startswith("socket:["):
            if net is None:
                net = _net(pid)[0]
            inode = int(target[len("socket:[") : -1])
            if inode in net:
                sockets.append({"fd": fd, "inode": inode, **_socket_entry(*net[inode])})
            continue
        if not target.startswith("/"):
            continue  # pipes, anon inodes
        record: dict[str, Any] = {
            "fd": fd,
            "path": target,
            "size": None,
            "pos": None,
            "flags": None,
        }
        try:
            for line in _read_text(PROC / str(pid) / "fdinfo" / entry.name).splitlines():
                key, _, value = line.partition(":")
                if key == "pos":
                    record["pos"] = int(value)
                elif key == "flags":
                    record["flags"] = value.strip()
        except OSError:
            pass
        if stat_files and not target.startswith(("/dev/", "/proc/", "/sys/")):
            try:
                st = os.stat(entry)
                if os.path.isfile(entry):
                    record["size"] = st.st_size
                    record["mtime"] = st.st_mtime
            except OSError:
                pass
        files.append(record)
    files.sort(key=lambda r: r["fd"])
    sockets.sort(key=lambda r: r["fd"])
    return files, sockets


def read_process_info(pid: int) -> dict[str, Any]:
    """Facts that do not change while the process lives: identity and role inputs."""
    base = PROC / str(pid)
    stat = parse_stat(_read_text(base / "stat"))
    env, env_error = read_env(pid)
    try:
        exe = os.readlink(base / "exe")
    except OSError:
        exe = ""
    try:
        cwd = os.readlink(base / "cwd")
    except OSError:
        cwd = ""
    status = _read_text(base / "status")
    uid = next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("Uid:")), -1
    )
    return {
        "pid": pid,
        "ppid": stat["ppid"],
        "pgid": stat["pgid"],
        "comm": stat["comm"],
        "exe": exe,
        "cwd": cwd,
        "cmdline": read_cmdline(pid),
        "uid": uid,
        "starttime_ticks": stat["starttime"],
        "env": env,
        "env_error": env_error,
        "python": looks_like_python(pid),
        "tensorflow": loads_tensorflow(pid),
        "clk_tck": CLK_TCK,
    }


def read_round(pid: int, stat_files: bool = True) -> dict[str, Any]:
    """What changes from round to round: states, CPU, I/O, open files, sockets."""
    base = PROC / str(pid)
    taken_at = time.time()
    stat = parse_stat(_read_text(base / "stat"))
    threads = read_threads(pid)
    try:
        files, sockets = read_fds(pid, stat_files=stat_files)
        fds_error = ""
    except PermissionError:
        files, sockets, fds_error = [], [], "permission denied reading /proc/PID/fd"
    return {
        "pid": pid,
        "time": taken_at,
        "state": stat["state"],
        "utime": stat["utime"],
        "stime": stat["stime"],
        "num_threads": stat["num_threads"],
        "clk_tck": CLK_TCK,
        # Every listening address in the target's network namespace, not only its own:
        # a cluster member with nothing listening at its address is not running.
        "host_listening": host_listening(pid),
        "rss_bytes": read_rss(pid),
        "threads": threads,
        "io": read_io(pid),
        "files": files,
        "sockets": sockets,
        "fds_error": fds_error,
    }


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Rows as columns, {"tid": [...], "name": [...]}: a key some rows lack is null there.
    Half the bytes of a list of objects, and the loader takes each column whole."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return {key: [row.get(key) for row in rows] for key in keys}


def for_dump(data: dict[str, Any], round_index: int, out: Any) -> dict[str, Any]:
    """A round as procfs.json keeps it (schema 5): threads, files and sockets as columns;
    the host's listening addresses only in the first file of its network namespace this
    round (every process of a host would repeat the same thousand addresses)."""
    written = dict(data)
    namespace = _net_namespace(int(data["pid"]))
    written["netns"] = str(namespace)
    if not out.claim(("host_listening", round_index, namespace), data["pid"]):
        written.pop("host_listening", None)
    for name in ("threads", "files", "sockets"):
        written[name] = columns(data[name])
    return written


def write_round(out: Any, round_index: int, data: dict[str, Any]) -> str:
    """Write a round read by `read_round` as procfs.json (`for_dump`); its name in the dump."""
    from collectors.layout import procfs_file

    written = for_dump(data, round_index, out)
    return str(out.write_json(procfs_file(int(data["pid"]), round_index), written))


def read_rss(pid: int) -> int | None:
    try:
        fields = _read_text(PROC / str(pid) / "statm").split()
        return int(fields[1]) * PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return None


def listening_ports(sockets: list[dict[str, Any]]) -> list[int]:
    return sorted(
        {int(s["local"].rsplit(":", 1)[1]) for s in sockets if s["tcp_state"] == "LISTEN"}
    )


class ProcfsCollector:
    """Per-round process and thread states, CPU, I/O, open files and sockets."""

    name = "procfs"

    def collect(self, target: Any, round_index: int, out: Any) -> list[str]:
        from collectors.base import CollectorFailure
        from collectors.layout import FailureKind

        try:
            data = read_round(target.pid)
        except (FileNotFoundError, ProcessLookupError) as exc:
            raise CollectorFailure("the process exited", kind=FailureKind.EXITED) from exc
        except PermissionError as exc:
            raise CollectorFailure(
                f"permission denied: {exc}", kind=FailureKind.PERMISSION
            ) from exc
        target.open_files = data["files"]
        from collectors.watch import worth_watching

        target.other_tids = [t["tid"] for t in data["threads"] if worth_watching(t)]
        return [write_round(out, round_index, data)]
