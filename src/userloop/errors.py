"""Errors a user can cause. The CLI prints them as one line (never a traceback) and exits 2."""


class UserError(Exception):
    """A problem with the user's input or configuration, explained in one line."""


def missing_dependency(package: str, extra: str) -> UserError:
    """The one-line hint for an optional dependency that is not installed."""
    return UserError(f"this needs the '{package}' package: pip install 'userloop[{extra}]'")

