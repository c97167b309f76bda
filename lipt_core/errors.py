"""The error family of lipt.

Every failure a user can cause (a bad file, an unknown preset, a checkpoint that does not fit)
is one of these. The CLI turns them into one clean line and an exit code; the library never
prints.
"""

from __future__ import annotations


class LiptError(Exception):
    """Base class: a problem a user can act on, reported as one line."""

    exit_code = 1


class UsageError(LiptError):
    """The request itself is wrong: an unknown preset, an invalid option value."""

    exit_code = 2


class InputError(LiptError):
    """An input file cannot be used: missing, unreadable, of an unsupported kind."""


class CheckpointError(LiptError):
    """A checkpoint cannot be read, or its tensors do not fit the network."""


class VerificationError(LiptError):
    """A numerical check failed, e.g. a fused model that does not match its training form."""
