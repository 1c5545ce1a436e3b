"""The one error type the CLI turns into a single stderr line and a non-zero exit."""


class TmixError(Exception):
    """A user-facing failure: its message is printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.code = code
