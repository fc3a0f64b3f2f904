"""Errors a user can cause.

A `UserError` is a bad file, a bad config key or a bad request: the CLI prints its message on one line
(`path:line: what is wrong`, or the config key) and exits with code 2. Anything else is a bug and may
raise with a traceback.
"""

EXIT_USER_ERROR = 2


class UserError(Exception):
    """A problem with the user's input; the message is the whole story, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def at(path, line: int | None, message: str) -> UserError:
    """`path:line: message` (or `path: message` when the problem is not on one line)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return UserError(f"{where}: {message}")
