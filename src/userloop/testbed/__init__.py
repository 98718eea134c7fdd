"""The testbed: a synthetic population of chat-assistant users whose hidden truth is known.

``generate(users, seed)`` returns a :class:`Population`; ``score(persona, response)`` is the
persona-match scorer. See ``docs/testbed.md`` for the generative story and measured figures.
"""

from userloop.testbed.persona import Persona
from userloop.testbed.persona_match import score, score_components
from userloop.testbed.population import Population, SimulatedUser, generate, read_truth

__all__ = ["Persona", "Population", "SimulatedUser", "generate", "read_truth", "score", "score_components"]
