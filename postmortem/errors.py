"""One exception family for every foreseeable failure a user can meet.

Each error carries the exit code the CLI returns and a help text that says what to do.
The CLI maps them to stderr in one place (``postmortem.cli``); nothing else prints
tracebacks. This module is standard-library only: the capture side imports it on hosts
without pandas or TensorFlow.
"""

from __future__ import annotations

import enum
import os


class ExitCode(enum.IntEnum):
    OK = 0
    USAGE = 2
    NO_SUCH_PROCESS = 3
    PERMISSION = 4
    NOT_PYTHON = 5
    TOOL_MISSING = 6
    OUTPUT_EXISTS = 7
    TARGET_EXITED = 8
    TF_SERVER_UNREACHABLE = 9
    BAD_DUMP = 10
    UNSUPPORTED_DUMP_VERSION = 11
    PARTIAL_CAPTURE = 12
    OUTPUT_UNWRITABLE = 13
    HOST_NOT_CAPTURED = 14
    INTERNAL = 70
    INTERRUPTED = 130


PERMISSION_HELP_TEXT = (
    "Attaching to another process needs ptrace rights. Any of these fixes it:\n"
    "  - run postmortem as root, or as the user that owns the target processes;\n"
    "  - grant the capability: sudo setcap cap_sys_ptrace+ep $(which py-spy);\n"
    "  - relax Yama: sudo sysctl kernel.yama.ptrace_scope=0 (1 allows only descendants);\n"
    "  - in Docker or Kubernetes: docker run --cap-add SYS_PTRACE ... /\n"
    "    securityContext.capabilities.add: [SYS_PTRACE]."
)


class PostmortemError(Exception):
    """Base of all foreseeable failures: a message, a help text, an exit code."""

    exit_code: ExitCode = ExitCode.USAGE
    help_text: str = ""

    def __init__(self, message: str, *, help_text: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if help_text is not None:
            self.help_text = help_text


ROOT_PERMISSION_HELP_TEXT = (
    "postmortem runs as root, and the kernel still refuses: the process is outside this "
    "root's reach. Any of these is likely:\n"
    "  - it runs in another container or user namespace: run postmortem inside that "
    "container (kubectl exec / docker exec), or from the host's root namespace;\n"
    "  - a security module forbids ptrace (AppArmor, SELinux), or "
    "kernel.yama.ptrace_scope is 3: check `cat /proc/sys/kernel/yama/ptrace_scope`;\n"
    "  - in Docker or Kubernetes, this container lacks SYS_PTRACE: docker run "
    "--cap-add SYS_PTRACE / securityContext.capabilities.add: [SYS_PTRACE]."
)


def permission_help() -> str:
    """What to do about a refused attach, for who we are: root needs other advice."""
    return ROOT_PERMISSION_HELP_TEXT if os.geteuid() == 0 else PERMISSION_HELP_TEXT


class NoSuchProcessError(PostmortemError):
    exit_code = ExitCode.NO_SUCH_PROCESS
    help_text = (
        "Check the pid with `ps -ef | grep python`, or let `postmortem capture --discover` "
        "find them."
    )


class PermissionDeniedError(PostmortemError):
    exit_code = ExitCode.PERMISSION
    help_text = PERMISSION_HELP_TEXT

    def __init__(self, message: str, *, help_text: str | None = None) -> None:
        super().__init__(message, help_text=help_text or permission_help())


class NotPythonError(PostmortemError):
    exit_code = ExitCode.NOT_PYTHON
    help_text = (
        "postmortem reads Python stacks: point it at the python processes running "
        "tf.distribute.Server."
    )


class ToolMissingError(PostmortemError):
    exit_code = ExitCode.TOOL_MISSING
    help_text = (
        "Install it with `pip install py-spy pystack` in the environment that runs postmortem."
    )


TENSORFLOW_HELP_TEXT = (
    "Install TensorFlow beside postmortem: pip install 'postmortem[tf]' (tensorflow-cpu). "
    "Capturing stacks, analyzing and reporting need no TensorFlow."
)


class TensorFlowMissingError(PostmortemError):
    exit_code = ExitCode.TOOL_MISSING
    help_text = TENSORFLOW_HELP_TEXT


class OutputExistsError(PostmortemError):
    exit_code = ExitCode.OUTPUT_EXISTS
    help_text = "Choose another output path, or pass --force to replace it."


class TargetExitedError(PostmortemError):
    exit_code = ExitCode.TARGET_EXITED
    help_text = "The dump keeps what was captured before the process went away."


class TfServerUnreachableError(PostmortemError):
    exit_code = ExitCode.TF_SERVER_UNREACHABLE
    help_text = (
        "Check HOST:PORT: it is the address the tf.distribute.Server listens on "
        "(its entry in the cluster spec). A frozen server does not answer: that is evidence too."
    )


class BadDumpError(PostmortemError):
    exit_code = ExitCode.BAD_DUMP
    help_text = (
        "Point postmortem at a directory written by `postmortem capture` (it holds manifest.json)."
    )


class UnsupportedDumpVersionError(PostmortemError):
    exit_code = ExitCode.UNSUPPORTED_DUMP_VERSION
    help_text = "Upgrade postmortem (pip install -U postmortem) to read this dump."


class PartialCaptureError(PostmortemError):
    """Capture finished, but some collectors failed: the dump is still written."""

    exit_code = ExitCode.PARTIAL_CAPTURE
    help_text = "The dump holds everything else; see its manifest.json `outcomes` for each failure."


class OutputUnwritableError(PostmortemError):
    """An output path that cannot be written: the message carries the OS's reason."""

    exit_code = ExitCode.OUTPUT_UNWRITABLE
    help_text = "Choose an output path on a writable filesystem, in a directory you can write."


class HostNotCapturedError(PostmortemError):
    """A --host could not be captured (unreachable, refused, unknown host key): the other
    hosts' dump is still written, and says which host is missing and why."""

    exit_code = ExitCode.HOST_NOT_CAPTURED
    help_text = (
        "Check that `ssh -o BatchMode=yes HOST true` works from here (the host key known, a "
        "key that logs in without a password) and that python3 runs there; pass ssh options "
        "with --ssh-option, or another remote shell with --via. Its members show as "
        "'not captured' in the analysis."
    )


class UsageError(PostmortemError):
    exit_code = ExitCode.USAGE
