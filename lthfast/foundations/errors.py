"""The one exception type for mistakes a user can make (bad flags, missing data, ...).

The CLI prints these as one line and exits non-zero; everything else is a bug.
"""


class LthError(Exception):
    """A user-facing error whose message names the problem."""


class Interrupted(LthError):
    """Training stopped by a signal after saving a checkpoint; the CLI exits with 130."""
