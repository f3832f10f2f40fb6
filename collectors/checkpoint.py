"""Checkpoint directory state each round: files, sizes, mtimes, the `checkpoint` file.

Only stat and read: a hung filesystem can block these calls, so the capture loop runs
them under a time bound and records a listing that never returned as evidence.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from collectors.procfs import read_cmdline

# Flags that name where a job writes checkpoints, across common launchers.
CHECKPOINT_FLAGS = (
    "checkpoint_dir",
    "ckpt_dir",
    "logdir",
    "log_dir",
    "train_dir",
    "model_dir",
    "checkpoint_path",
    "save_dir",
    "output_dir",
)
CHECKPOINT_FILE = re.compile(
    r"(\.index|\.data-\d+-of-\d+|\.meta|_temp[/_]|checkpoint$|\.tempstate)"
)
STATE_FILE_LIMIT = 64 * 1024
MAX_FILES = 2000


def dirs_from_flags(cmdline: list[str]) -> list[Path]:
    """Values of checkpoint-location flags: `--flag=V`, `--flag V`, absl's single-dash
    `-flag=V`, and argparse's dashed spelling `--checkpoint-dir V`."""
    found = []
    for i, arg in enumerate(cmdline):
        if not arg.startswith("-") or arg in ("-", "--"):
            continue
        name, sep, value = arg.lstrip("-").partition("=")
        if name.replace("-", "_") not in CHECKPOINT_FLAGS:
            continue
        if not sep and i + 1 < len(cmdline) and not cmdline[i + 1].startswith("-"):
            value = cmdline[i + 1]
        if value:
            found.append(Path(value))
    return found


def dirs_from_open_files(files: list[dict[str, Any]]) -> list[Path]:
    """Directories of open checkpoint files (e.g. a SaveV2 writing `*_temp/part-*.data`)."""
    found = []
    for record in files:
        path = record.get("path", "")
        if CHECKPOINT_FILE.search(path):
            parent = Path(path).parent
            # A sharded save writes into `<prefix>_temp/`: the checkpoint dir is above it.
            if parent.name.endswith("_temp") or "_temp_" in parent.name:
                parent = parent.parent
            found.append(parent)
    return found


def discover_dirs(pid: int, cwd: str, files: list[dict[str, Any]]) -> list[Path]:
    try:
        cmdline = read_cmdline(pid)
    except OSError:
        cmdline = []
    candidates = []
    for path in dirs_from_flags(cmdline) + dirs_from_open_files(files):
        if not path.is_absolute():
            path = Path(cwd) / path
        candidates.append(path)
    unique: list[Path] = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def read_checkpoint_dir(directory: Path) -> dict[str, Any]:
    taken_at = time.time()
    entries = []
    state_text = None
    for root, dirnames, filenames in os.walk(directory):
        depth = Path(root).relative_to(directory).parts
        if len(depth) >= 2:
            dirnames.clear()
        for name in filenames:
            full = Path(root) / name
            try:
                st = full.stat()
            except OSError:
                continue
            entries.append(
                {
                    "name": str(full.relative_to(directory)),
                    "size": st.st_size,
                    "mtime": st.st_mtime,
                }
            )
            if len(entries) >= MAX_FILES:
                break
    state_path = directory / "checkpoint"
    if state_path.is_file():
        with open(state_path, "rb") as handle:
            state_text = handle.read(STATE_FILE_LIMIT).decode(errors="replace")
    entries.sort(key=lambda e: str(e["name"]))
    return {
        "dir": str(directory),
        "time": taken_at,
        "exists": directory.is_dir(),
        "files": entries,
        "state_file": state_text,
    }
