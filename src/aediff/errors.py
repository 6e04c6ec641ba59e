"""Errors that carry a message a user can act on.

The CLI prints these without a stack trace; anything else is a bug and keeps its traceback.
"""


class AediffError(Exception):
    """Base class: the message names the problem and the fix."""


class DataError(AediffError):
    """A dataset could not be found, read or validated."""


class ConfigError(AediffError):
    """A configuration value is invalid or inconsistent."""


class RunError(AediffError):
    """A run folder is missing, incomplete or from an incompatible version."""
