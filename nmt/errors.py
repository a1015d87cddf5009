"""The one exception type for mistakes a user can make (bad files, configs, checkpoints)."""


class NMTError(Exception):
    """A user-caused error; the CLIs print its message (no traceback) and exit with status 1.

    The message names the file (and line, where one applies) and says what to do.
    """


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name if it has none): to quote another library's error."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]
