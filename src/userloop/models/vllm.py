"""``vllm:PATH_OR_HUB_ID``: vLLM in this process (offline ``vllm.LLM``).

vLLM pins its own torch build, so it lives in its own virtual environment (see docs/models.md).
Usually better: run ``vllm serve PATH`` there and use ``openai:MODEL@http://127.0.0.1:8000/v1`` from
userloop's environment. Written against vLLM >= 0.8 (``LLM.chat``, ``SamplingParams.bad_words`` and
``logit_bias``); one call generates a whole batch, and vLLM schedules it. Special tokens stay in the
text (``skip_special_tokens=False``), so a user LM's ``<|endconversation|>`` reaches the caller.
"""

from __future__ import annotations

try:
    import vllm
except ImportError:
    from userloop.errors import UserError, missing_dependency

    raise UserError(f"{missing_dependency('vllm', 'vllm')} in its own virtual environment (vLLM pins its own "
                    "torch), or run `vllm serve` there and use openai:MODEL@http://HOST:PORT/v1") from None

import asyncio
import threading
import time

from userloop.models.base import Capabilities, ChatMessages, ChatModel, Choice, Completion, GenerationParams


class VLLMChatModel(ChatModel):
    """An in-process vLLM engine; each call is one ``LLM.chat`` batch, calls run one at a time."""

    supports = Capabilities(banned_tokens=True, logit_bias=True)

    def __init__(self, path: str, *, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 max_model_len: int | None = None, dtype: str = "auto", trust_remote_code: bool = False) -> None:
        self.name = f"vllm:{path}"
        self.llm = vllm.LLM(model=path, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                            gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                            trust_remote_code=trust_remote_code)
        self._lock = threading.Lock()

    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        return await asyncio.to_thread(self._generate, conversations, params)

    def _generate(self, conversations: list[ChatMessages], params: GenerationParams) -> list[Completion]:
        defaults = self.llm.get_default_sampling_params()  # from the checkpoint's generation config
        sampling = vllm.SamplingParams(
            n=params.n, max_tokens=params.max_new_tokens, seed=params.seed,
            temperature=defaults.temperature if params.temperature is None else params.temperature,
            top_p=defaults.top_p if params.top_p is None else params.top_p, top_k=defaults.top_k,
            stop=list(params.stop) or None, bad_words=list(params.banned_tokens) or None,
            logit_bias=dict(params.logit_bias) or None,
            skip_special_tokens=False, spaces_between_special_tokens=False,
        )
        started = time.perf_counter()
        with self._lock:
            outputs = self.llm.chat(conversations, sampling, use_tqdm=False)
        seconds = time.perf_counter() - started
        completions = []
        for output in outputs:
            choices = [Choice(o.text, o.finish_reason or "stop", len(o.token_ids)) for o in output.outputs]
            completions.append(Completion(choices=choices, prompt_tokens=len(output.prompt_token_ids or ()),
                                          completion_tokens=sum(c.completion_tokens for c in choices),
                                          seconds=seconds, model=self.name))
        return completions
