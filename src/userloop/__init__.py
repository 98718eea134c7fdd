"""userloop: model the users of chat assistants (user language models, simulation, RLHI)."""

__version__ = "0.1.0"
