"""The `bttf` command line: a thin shell over the library.

Only this module imports click and owns the rich console. Each command validates its options,
builds one config dataclass and calls one library function.
"""

from __future__ import annotations

import logging
import os
import sys

import click
from rich.console import Console

from bttf.errors import BttfError

console = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bttf")
@click.option("-v", "--verbose", is_flag=True, help="Log what each stage does.")
def cli(verbose: bool) -> None:
    """Colorize black-and-white films and photographs."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(name)s: %(message)s"
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit codes 0 / 1 / 2 / 130; BTTF_DEBUG=1 re-raises."""
    debug = os.environ.get("BTTF_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=argv, prog_name="bttf", standalone_mode=False)
    except click.exceptions.Abort:
        console.print("bttf: interrupted", highlight=False)
        sys.exit(130)
    except KeyboardInterrupt:
        console.print("bttf: interrupted", highlight=False)
        sys.exit(130)
    except click.ClickException as e:
        if debug:
            raise
        e.show()
        sys.exit(e.exit_code)
    except BttfError as e:
        if debug:
            raise
        click.echo(f"bttf: error: {e}", err=True)
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        if debug:
            raise
        click.echo(f"bttf: error: {type(e).__name__}: {e} (set BTTF_DEBUG=1 for details)", err=True)
        sys.exit(1)
