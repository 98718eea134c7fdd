"""``userloop serve --simulator``: a :class:`UserSimulator` behind the OpenAI chat-completions API.

The wire format and the request handling are the models layer's
(:mod:`userloop.models.serve.simulator_protocol`, :mod:`~userloop.models.serve.simulator_serving`);
this module puts the simulator behind them. Each request gets the server's guardrails and sampling
defaults, with the request's ``temperature``, ``top_p`` and ``seed`` when it sends them; its
``max_tokens`` can lower the tokens per sample, never raise them above the server's (a user turn
is at most ``max_words`` words, and a sample cut short is resampled anyway). The system message is
the intent with the request's ``persona`` (:func:`~userloop.userlm.flip.user_system_message`), as
``userloop simulate`` builds it. See docs/integrations.md.
"""

from __future__ import annotations

from dataclasses import asdict, replace
from typing import Any

from userloop.models.base import ChatModel, GenerationParams
from userloop.models.metered import MeteredModel
from userloop.models.serve import build_app, serve
from userloop.models.serve.simulator_protocol import HarnessOptions
from userloop.models.serve.simulator_serving import ServedTurn, SimulatorServing
from userloop.userlm.flip import user_system_message
from userloop.userlm.simulator import GuardrailConfig, UserSimulator


class SimulatorTurns:
    """The :class:`~userloop.models.serve.simulator_serving.TurnWriter` of a :class:`UserSimulator`."""

    def __init__(self, simulator: UserSimulator) -> None:
        self.simulator = simulator

    def description(self) -> dict[str, Any]:
        params = self.simulator.params
        return {"guardrails": asdict(self.simulator.guardrails),
                "sampling": {"max_new_tokens": params.max_new_tokens, "temperature": params.temperature,
                             "top_p": params.top_p}}

    async def write(self, intent: str, persona: str | None, history: list[dict[str, str]],
                    sampling: dict[str, Any]) -> ServedTurn:
        defaults = self.simulator.params
        sampling = dict(sampling)
        if "max_new_tokens" in sampling:
            sampling["max_new_tokens"] = min(sampling["max_new_tokens"], defaults.max_new_tokens)
        meter = MeteredModel(self.simulator.model)
        simulator = UserSimulator(meter, self.simulator.guardrails, replace(defaults, **sampling))
        [turn] = await simulator.anext_turns([user_system_message(intent, persona)], [history])
        return ServedTurn(turn.text, turn.ended, turn.events, meter.prompt_tokens, meter.completion_tokens)


def simulator_serving(simulator: UserSimulator, model_name: str, api_key: str | None = None,
                      harness: HarnessOptions | None = None) -> SimulatorServing:
    """The request handling of a server for ``simulator`` as ``model_name`` (``api_key``, if any, required),
    for harnesses calling it as ``harness`` says."""
    return SimulatorServing(SimulatorTurns(simulator), simulator.model, model_name, api_key, harness)


def build_simulator_app(simulator: UserSimulator, model_name: str, api_key: str | None = None,
                        harness: HarnessOptions | None = None, **app_options):
    """The FastAPI app serving ``simulator`` (``app_options`` as :func:`userloop.models.serve.build_app`'s)."""
    return build_app(simulator.model, model_name, api_key,
                     serving=simulator_serving(simulator, model_name, api_key, harness), **app_options)


def serve_simulator(spec: str, guardrails: GuardrailConfig | None = None, params: GenerationParams | None = None,
                    harness: HarnessOptions | None = None, **serve_options) -> None:
    """Load the user LM ``spec`` and serve it behind the guardrails, for harnesses calling it as ``harness``
    says, until interrupted (``serve_options`` as :func:`userloop.models.serve.serve`'s: ``host``, ``port``,
    ``api_key``, ``model_name``, ``on_ready``, model options)."""
    def serving_for(model: ChatModel, model_name: str, api_key: str | None) -> SimulatorServing:
        return simulator_serving(UserSimulator(model, guardrails, params), model_name, api_key, harness)

    serve(spec, serving_for=serving_for, **serve_options)
