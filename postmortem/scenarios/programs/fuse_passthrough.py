"""A FUSE passthrough filesystem whose writes can be slowed down or stopped on command.

Mounts --root at --mountpoint (fusepy, libfuse2, foreground, multi-threaded). Writes:
  * --write_bytes_per_sec R   sleep len(data)/R per write: a slow but working store
  * --block_flag PATH         once PATH exists, every write waits forever: a hung NFS or
                              HDFS client. The writer sits in the kernel waiting for an
                              answer that never comes; only ending this daemon (or
                              aborting the connection) frees it.
Everything else passes straight through to --root.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import threading
import time
from typing import Any

from fuse import FUSE, FuseOSError, Operations

log = logging.getLogger("fuse_passthrough")
MOUNTED = "fuse mounted"
WRITE_BLOCKED = "write blocked"


class Passthrough(Operations):  # type: ignore[misc]
    def __init__(self, root: str, block_flag: str, bytes_per_sec: float) -> None:
        self.root = os.path.realpath(root)
        self.block_flag = block_flag
        self.bytes_per_sec = bytes_per_sec
        self._never = threading.Event()
        self.bytes_written = 0

    def _full(self, path: str) -> str:
        return os.path.join(self.root, path.lstrip("/"))

    def access(self, path: str, mode: int) -> None:
        if not os.access(self._full(path), mode):
            raise FuseOSError(errno.EACCES)

    def chmod(self, path: str, mode: int) -> None:
        os.chmod(self._full(path), mode)

    def chown(self, path: str, uid: int, gid: int) -> None:
        os.chown(self._full(path), uid, gid)

    def getattr(self, path: str, fh: Any = None) -> dict[str, Any]:
        st = os.lstat(self._full(path))
        keys = (
            "st_atime",
            "st_ctime",
            "st_gid",
            "st_mode",
            "st_mtime",
            "st_nlink",
            "st_size",
            "st_uid",
            "st_blocks",
        )
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path: str, fh: Any) -> list[str]:
        return [".", "..", *os.listdir(self._full(path))]

    def readlink(self, path: str) -> str:
        return os.readlink(self._full(path))

    def mknod(self, path: str, mode: int, dev: int) -> None:
        os.mknod(self._full(path), mode, dev)

    def rmdir(self, path: str) -> None:
        os.rmdir(self._full(path))

    def mkdir(self, path: str, mode: int) -> None:
        os.mkdir(self._full(path), mode)

    def statfs(self, path: str) -> dict[str, Any]:
        st = os.statvfs(self._full(path))
        keys = (
            "f_bavail",
            "f_bfree",
            "f_blocks",
            "f_bsize",
            "f_favail",
            "f_ffree",
            "f_files",
            "f_flag",
            "f_frsize",
            "f_namemax",
        )
        return {k: getattr(st, k) for k in keys}

    def unlink(self, path: str) -> None:
        os.unlink(self._full(path))

    def symlink(self, name: str, target: str) -> None:
        os.symlink(target, self._full(name))

    def rename(self, old: str, new: str) -> None:
        os.rename(self._full(old), self._full(new))

    def link(self, target: str, name: str) -> None:
        os.link(self._full(name), self._full(target))

    def utimens(self, path: str, times: Any = None) -> None:
        os.utime(self._full(path), times)

    def open(self, path: str, flags: int) -> int:
        return os.open(self._full(path), flags)

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)

    def read(self, path: str, length: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, length, offset)

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        if self.block_flag and os.path.exists(self.block_flag):
            log.info("%s %s offset %d", WRITE_BLOCKED, path, offset)
            self._never.wait()
        if self.bytes_per_sec:
            time.sleep(len(data) / self.bytes_per_sec)
        n = os.pwrite(fh, data, offset)
        self.bytes_written += n
        return n

    def truncate(self, path: str, length: int, fh: Any = None) -> None:
        with open(self._full(path), "r+b") as f:
            f.truncate(length)

    def flush(self, path: str, fh: int) -> None:
        return None

    def release(self, path: str, fh: int) -> None:
        os.close(fh)

    def fsync(self, path: str, fdatasync: int, fh: int) -> None:
        os.fsync(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--mountpoint", required=True)
    parser.add_argument("--block_flag", default="")
    parser.add_argument("--write_bytes_per_sec", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(process)d %(threadName)s %(levelname)s %(message)s",
    )
    ops = Passthrough(args.root, args.block_flag, args.write_bytes_per_sec)
    log.info("%s root %s at %s", MOUNTED, args.root, args.mountpoint)  # mount follows
    FUSE(
        ops,
        args.mountpoint,
        foreground=True,
        nothreads=False,
        big_writes=True,
        max_write=131072,
        fsname="postmortem-scenario",
    )


if __name__ == "__main__":
    main()
