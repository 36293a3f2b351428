"""The `bttf` command line: a thin shell over the library.

Only this package imports click and owns the rich console (`bttf.cli.app`). Each command validates
its options, builds one config dataclass and calls one library function:

- `app.py`: the group, the console, shared option types;
- `colorize.py`: `colorize`, `gif`;
- `train.py`: `prepare`, `train`, `eval`;
- `tools.py`: `models`, `cuts`, `eval-video`, `compare`;
- `download.py`: `download` (released weights into torch hub's cache).

`main()` turns every error into one line and an exit code.
"""

from __future__ import annotations

import os
import sys

import click

from bttf.cli import colorize, download, tools, train  # noqa: F401 - registers the commands
from bttf.cli.app import cli, console
from bttf.errors import BttfError

__all__ = ["cli", "main"]


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised on the main thread so it unwinds like Ctrl-C (temp files go, work
    folders for --resume stay)."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise _Terminated


# click >= 8.2 raises this (a UsageError) to print the help for a bare `bttf`: keep its form
_HELP_ERRORS = getattr(click.exceptions, "NoArgsIsHelpError", ())


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit codes 0 / 1 / 2 / 130 (Ctrl-C) / 143 (SIGTERM);
    BTTF_DEBUG=1 re-raises."""
    import signal
    import threading

    debug = os.environ.get("BTTF_DEBUG", "") not in ("", "0")
    old_term = None
    if threading.current_thread() is threading.main_thread():
        old_term = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        code = cli.main(args=argv, prog_name="bttf", standalone_mode=False)
        if isinstance(code, int) and code:
            sys.exit(code)
    except (click.exceptions.Abort, KeyboardInterrupt) as e:
        if isinstance(e, _Terminated) or isinstance(e.__cause__, _Terminated):
            console.print("bttf: terminated", highlight=False)
            sys.exit(143)
        console.print("bttf: interrupted", highlight=False)
        sys.exit(130)
    except click.ClickException as e:
        if debug:
            raise
        if isinstance(e, click.UsageError) and not isinstance(e, _HELP_ERRORS):
            # one line, like every other error; click's own form is usage + hint + message
            where = e.ctx.command_path if e.ctx else "bttf"
            click.echo(
                f"bttf: error: {e.format_message().rstrip('.')}; see '{where} --help'", err=True
            )
        else:
            e.show()
        sys.exit(e.exit_code)
    except BttfError as e:
        if debug:
            raise
        click.echo(f"bttf: error: {e}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:  # last resort: one line, never a traceback
        if debug:
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        click.echo(
            f"bttf: error: {type(e).__name__}: {first} (set BTTF_DEBUG=1 for details)", err=True
        )
        sys.exit(1)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
