"""Errors a user can cause and fix."""


class UserError(Exception):
    """An error the user caused and can fix; the CLI prints its message (one sentence saying what to do) and exits with code 2."""
