"""Errors a user can cause.

A `UserError` is a bad file, a bad config key or a bad request: the CLI prints its message on one line
(`path:line: what is wrong`, or the config key) and exits with code 2. Anything else is a bug and may
raise with a traceback.

`Waiting` is not an error: a command (`rlhf loop --no-wait`) stopped because people have not finished their part
yet. The CLI exits with code 3, so a script can tell "waiting" (3) from "done" (0) and from a mistake (2).
"""

EXIT_USER_ERROR = 2
EXIT_WAITING = 3


class UserError(Exception):
    """A problem with the user's input; the message is the whole story, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def at(path, line: int | None, message: str) -> UserError:
    """`path:line: message` (or `path: message` when the problem is not on one line)."""
    where = f"{path}:{line}" if line is not None else f"{path}"
    return UserError(f"{where}: {message}")


class Waiting(Exception):
    """Stopped until people finish labeling; the message says what is missing, on one line."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
