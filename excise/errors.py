"""The one error type a user sees: a message that says what is wrong and what to do."""


class ExciseError(Exception):
    """A problem with the user's input or environment; the CLI prints it and exits 2."""

    exit_code = 2
