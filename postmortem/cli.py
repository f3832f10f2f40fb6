"""The `postmortem` command: one thin module per subcommand, errors mapped in one place."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from postmortem.errors import ExitCode, PostmortemError

app = typer.Typer(
    name="postmortem",
    help="Why is a distributed TensorFlow job stuck saving a checkpoint? "
    "capture -> analyze -> report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root() -> None:
    """Why is a distributed TensorFlow job stuck saving a checkpoint?"""


def stderr_console() -> Console:
    return Console(stderr=True, no_color="NO_COLOR" in os.environ, highlight=False)


def _register() -> None:
    from postmortem.commands import capture

    app.command("capture")(capture.capture)
    for name in ("analyze", "report", "export", "demo"):
        try:
            module = __import__(f"postmortem.commands.{name}", fromlist=[name])
        except ModuleNotFoundError as exc:
            if exc.name != f"postmortem.commands.{name}":
                raise
            continue
        app.command(name)(getattr(module, name))


_register()


def report_error(error: PostmortemError) -> int:
    console = stderr_console()
    console.print(f"[bold red]postmortem: error:[/] {error.message}", markup=True, soft_wrap=True)
    if error.help_text:
        console.print(error.help_text, markup=False, soft_wrap=True)
    return int(error.exit_code)


def main(argv: list[str] | None = None) -> int:
    try:
        result = app(args=argv, prog_name="postmortem", standalone_mode=False)
    except PostmortemError as error:
        return report_error(error)
    except KeyboardInterrupt:
        stderr_console().print("postmortem: interrupted.")
        return int(ExitCode.INTERRUPTED)
    except typer.Exit as done:
        return int(done.exit_code)
    except typer.Abort:
        stderr_console().print("postmortem: interrupted.")
        return int(ExitCode.INTERRUPTED)
    except Exception as exc:  # click usage errors and the like
        # typer vendors its own copy of click: recognise either by shape, not by class.
        exit_code = getattr(exc, "exit_code", None)
        show = getattr(exc, "show", None)
        if callable(show) and isinstance(exit_code, int):
            show()
            return exit_code
        if os.environ.get("POSTMORTEM_DEBUG"):
            raise
        stderr_console().print(
            f"postmortem: internal error: {type(exc).__name__}: {exc}\n"
            "This is a bug in postmortem. Re-run with POSTMORTEM_DEBUG=1 for the traceback "
            "and attach it (and the dump, if you can) to a bug report.",
            markup=False,
        )
        return int(ExitCode.INTERNAL)
    return result if isinstance(result, int) else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
