"""Simulation run records built by hand for the tests of their readers."""

from userloop.simulate.records import SimulatedConversation, SimulatedMessage, TokenCount


def simulated(scenario_id: str, messages: list[tuple[str, str]], end_reason: str = "user_ended", *, sample: int = 0,
              kind: str = "math") -> SimulatedConversation:
    """A finished multi-turn conversation of ``(role, text)`` messages, as the engine would record it."""
    return SimulatedConversation(
        [SimulatedMessage(role, text, tokens=TokenCount(1, 1), finish_reason="stop" if role == "assistant" else None)
         for role, text in messages],
        scenario_id=scenario_id, sample=sample, kind=kind, intent=f"the intent of {scenario_id}", setting="multi_turn",
        end_reason=end_reason, solved=None if kind == "open" else False, max_user_turns=6, seed=0,
        timings={"wall_s": 0.0}, user_model="scripted:user", model="scripted:assistant")
