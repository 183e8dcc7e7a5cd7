"""The one exception type a user mistake raises: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """Bad input from the user (a job file, an override, a data path). Never shown as a traceback."""


def short(text, limit: int = 80) -> str:
    """At most `limit` characters of a value for an error message: input can be any size."""
    text = str(text)
    return text if len(text) <= limit else f"{text[: limit - 20]}... ({len(text)} characters)"
