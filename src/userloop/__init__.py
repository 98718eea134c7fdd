"""userloop: model the users of chat assistants (user language models, simulation, RLHI)."""

from userloop.version import __version__ as __version__


def __getattr__(name: str):
    """Lazy exports, so ``import userloop`` stays light."""
    if name in ("UserSimulator", "GuardrailConfig", "UserTurn"):
        from userloop.userlm import simulator

        return getattr(simulator, name)
    raise AttributeError(f"module 'userloop' has no attribute {name!r}")
