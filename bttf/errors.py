"""Errors that reach the user as one line: `bttf: error: <message>`.

Every message says what went wrong and what to do about it.
"""


class BttfError(Exception):
    """Base class: the CLI prints the message and exits with `exit_code`."""

    exit_code = 1


class BadInputError(BttfError):
    """The input file, option value or data is unusable (exit code 2)."""

    exit_code = 2


class UnknownModelError(BadInputError):
    """A model name that is not registered."""


class WeightsError(BadInputError):
    """A weights file that is missing, malformed or does not fit the model."""


class OutputExistsError(BadInputError):
    """The destination exists and --overwrite was not given."""


class MissingWeightsError(WeightsError):
    """A model's released weights are not downloaded yet (the message names `bttf download`)."""


class DownloadError(BttfError):
    """A download failed: no network, a dead server, a refused or wrong file, a folder that
    cannot be written (exit code 1)."""
