"""The one exception type a user mistake raises: the CLI prints its message on one line, exit 2."""


class UserError(Exception):
    """Bad input from the user (a job file, an override, a data path). Never shown as a traceback."""
