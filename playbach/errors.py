"""The one exception the CLI turns into a clear message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user (a file, key, port or folder): the message names it."""
