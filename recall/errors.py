"""The one exception type users see."""

from __future__ import annotations


class RecallError(Exception):
    """A problem the user can fix: bad input, bad config, an unknown name.

    The message says what is wrong, where (file, column, field) and what to
    do about it. The CLI prints it and exits with code 1, without a traceback.
    """
