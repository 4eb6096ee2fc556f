"""Errors meant for the user: the CLI prints them as one line and exits non-zero."""


class UserError(Exception):
    """Bad input (unknown name, missing file, invalid setting); the message says how to fix it."""
