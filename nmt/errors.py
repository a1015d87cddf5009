"""The one exception type for mistakes a user can make (bad files, configs, checkpoints)."""


class NMTError(Exception):
    """A user-caused error; the CLIs print its message (no traceback) and exit with status 1.

    The message names the file (and line, where one applies) and says what to do.
    """
