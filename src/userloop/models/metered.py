""":class:`MeteredModel`: a model that counts the tokens of the calls made through it."""

from __future__ import annotations

from collections.abc import Mapping

from userloop.models.base import ChatMessages, ChatModel, Completion, GenerationParams


class MeteredModel(ChatModel):
    """Wraps ``model`` (same name, capabilities and simulator settings) and adds up the prompt and
    completion tokens of every completion it returns; one per unit being counted (a turn, a request)."""

    def __init__(self, model: ChatModel) -> None:
        self.model, self.name, self.supports = model, model.name, model.supports
        self.prompt_tokens = self.completion_tokens = 0

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        completions = await self.model.agenerate(conversations, params, tools)
        self.prompt_tokens += sum(c.prompt_tokens for c in completions)
        self.completion_tokens += sum(c.completion_tokens for c in completions)
        return completions

    async def simulator_settings(self) -> Mapping | None:
        return await self.model.simulator_settings()
