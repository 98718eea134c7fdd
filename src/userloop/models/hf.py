"""``hf:PATH_OR_HUB_ID``: a local transformers checkpoint, batched.

Concurrent callers are coalesced: every conversation becomes a request in one queue, and a single
worker task takes up to ``max_batch_size`` rows (conversations x samples), starting once no request
arrived for ``batch_wait_ms`` (or ``max_batch_wait_ms`` after the first one), and runs one left-padded,
KV-cached ``model.generate`` call for each group of requests with the same parameters (seeds aside)
in the device's generation thread (one per device, shared by all models). So 64 conversations waiting
at once become one 64-wide batch; requests that arrive while a batch generates wait for the next.
A group whose padded rectangle (rows x (longest prompt + ``max_new_tokens``)) exceeds ``max_batch_tokens``
is cut, shortest prompts first, into calls within it: the KV cache of one call (and its copy while a
decoding step grows it) is bounded, and short prompts are not padded to the longest.
A group's prompts are prefilled first (all but their last token): sorted by the tokens each must
compute and cut into forward passes where the padding would cost more than another pass, judged from
timings of this model's earlier calls (this matters on CPUs, hardly on GPUs); the rows' states are then
laid side by side for the decoding steps. A request for ``n`` samples prefills its prompt once and
repeats the KV cache for its ``n`` rows. Prefix reuse: each prefilled prompt's states are kept in a
:class:`~userloop.models.prefix_cache.PrefixCache` (``prefix_cache_mb``, least recently used dropped
first), and a prompt that starts with the same tokens as a kept one (a guardrail resample round, a
conversation's next turn) computes only the tokens after their common prefix. The worker makes
each batch's prompts (chat template, tokenizer: time in proportion to their length) in a thread, so a
long prompt never holds up the event loop. One instance serves one running event loop at a time.

The prompt is the checkpoint's own chat template with ``add_generation_prompt=True``, whatever role
its generation prompt opens (a user LM's template opens a user turn). Generation stops on the
generation config's eos ids, the tokenizer's eos and the end-of-turn token the chat template writes
after a message. That stop token is not part of the text; every other token is decoded as it is,
special or not, so a user LM's ``<|endconversation|>`` reaches the caller.

Tools: given ``tools``, a chat template that takes them (its source names ``tools``) gets them as
``apply_chat_template(..., tools=...)`` and assistant calls in transformers' shape (``arguments`` a dict);
any other template gets them as a system-prompt block (:func:`~userloop.models.tools.tool_block`) and calls
written as ``<tool_call>`` blocks. Calls are read back from the generated text by
:func:`~userloop.models.tools.calls_in_text` (``<tool_call>{"name", "arguments"}</tool_call>`` blocks, or the
whole text as one bare JSON object with ``name`` and ``arguments``).

Sampling runs in a logits processor with one random generator per row, so a request's ``seed`` gives
the same output whatever else is in its batch (up to floating-point differences from padding).
Unset ``temperature`` / ``top_p`` come from the checkpoint's generation config (greedy when it does
not sample); its ``top_k`` and penalties apply too.

Bans: each banned string is mapped to every vocabulary token that decodes to it with or without a
leading space (so ``"I"`` covers Llama-3's ``ĠI`` and sentencepiece's ``▁I``), plus the tokenizer's
own encodings of the string and of the string after a space. Single tokens are masked; a
multi-token encoding is banned as a sequence (its last token is masked once the others were just
generated; at the first position: once the generation so far is the rest of it). Other ways of
spelling a string with several tokens are not covered. At the first position a banned word also bans
every token that opens with it after optional whitespace and before a non-letter (``"I'm"``,
``"\\nI"``, ``"Here's"``, ``"You,"``, not ``"Your"``), as tokenizers that merge such pieces have them.
"""

from __future__ import annotations

try:
    import torch
    import transformers
except ImportError as err:
    from userloop.errors import missing_dependency

    raise missing_dependency(err.name or "transformers", "hf") from None

import asyncio
import copy
import random
import re
import statistics
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from userloop.batching import token_budget_batches
from userloop.errors import UserError
from userloop.models.base import (
    Capabilities,
    ChatMessages,
    ChatModel,
    Choice,
    Completion,
    ContextLengthError,
    GenerationParams,
    cut_at_stop,
)
from userloop.models.prefix_cache import LayerStates, PrefixCache, right_aligned
from userloop.models.tools import calls_in_text, template_messages

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
NUCLEUS_CANDIDATES = 64  # top-p ranks these most probable tokens first, the whole vocabulary only when needed
_SENTINEL = "Userloopsentinel"


@dataclass(eq=False)
class _Request:
    messages: ChatMessages
    params: GenerationParams
    future: asyncio.Future
    tools: list[dict] | None = None
    submitted: float = field(default_factory=time.perf_counter)
    prompt_ids: list[int] = field(default_factory=list)  # made by the worker (:meth:`HFChatModel._with_prompts`)


class HFChatModel(ChatModel):
    """A transformers causal LM with its chat template; concurrent calls are batched together."""

    supports = Capabilities(banned_tokens=True, banned_first_tokens=True, logit_bias=True, tools=True)

    def __init__(self, path: str, *, device: str = "auto", dtype: str = "auto", max_batch_size: int = 64,
                 batch_wait_ms: float = 5.0, max_batch_wait_ms: float = 100.0, max_batch_tokens: int = 16384,
                 prefix_cache_mb: float = 1024.0, trust_remote_code: bool = False) -> None:
        if not isinstance(max_batch_size, int) or isinstance(max_batch_size, bool) or max_batch_size < 1:
            raise UserError(f"max_batch_size must be an integer >= 1, got {max_batch_size!r}")
        if not isinstance(max_batch_tokens, int) or isinstance(max_batch_tokens, bool) or max_batch_tokens < 0:
            raise UserError(f"max_batch_tokens must be an integer >= 0 (0: no limit), got {max_batch_tokens!r}")
        if isinstance(prefix_cache_mb, bool) or not isinstance(prefix_cache_mb, (int, float)) \
                or not 0 <= prefix_cache_mb < float("inf"):
            raise UserError(f"prefix_cache_mb must be a number of megabytes >= 0 (0: off), got {prefix_cache_mb!r}")
        for name, value in (("batch_wait_ms", batch_wait_ms), ("max_batch_wait_ms", max_batch_wait_ms)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value <= 10_000:
                raise UserError(f"{name} must be a number of milliseconds in [0, 10000], got {value!r}")
        self.name = f"hf:{path}"
        self.max_batch_size = max_batch_size
        self.max_batch_tokens = max_batch_tokens
        self.batch_wait_ms = batch_wait_ms
        self.max_batch_wait_ms = max(batch_wait_ms, max_batch_wait_ms)
        self.device = _device(device)
        self.tokenizer, self.model = _load(path, self.device, _dtype(dtype, self.device), trust_remote_code)
        self.template_takes_tools = _takes_tools(self.tokenizer.chat_template)
        self.generation_defaults = self.model.generation_config  # the checkpoint's own, read by _sampling
        self.model.generation_config = _without_sampling_and_length(self.generation_defaults)
        self.stop_ids = self._find_stop_ids()
        text_config = self.model.config.get_text_config()  # the language model's part of a multimodal config
        self.max_positions: int | None = getattr(text_config, "max_position_embeddings", None)
        self.vocab_size: int = text_config.vocab_size
        self.batch_size_counts: Counter[int] = Counter()  # rows per model.generate call -> how many calls
        self._costs = _GenerationCosts()
        self._plain_cache = _keeps_every_token(self.model.config)
        self.prefix_cache = PrefixCache(int(prefix_cache_mb * 2**20)) if prefix_cache_mb and self._plain_cache else None
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.stop_ids[0]
        self._token_index: dict[str, list[int]] | None = None
        self._ban_cache: dict[tuple[tuple[str, ...], bool], list[tuple[int, ...]]] = {}
        self._pending: deque[_Request] = deque()
        self._pending_rows = 0
        self._last_arrival = 0.0
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._worker_loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ public
    async def _agenerate(self, conversations: list[ChatMessages], params: GenerationParams,
                         tools: list[dict] | None = None) -> list[Completion]:
        for token, _ in params.logit_bias:
            if token >= self.vocab_size:
                raise UserError(f"logit_bias token id {token} is outside the vocabulary of {self.name} "
                                f"({self.vocab_size} tokens)")
        loop = asyncio.get_running_loop()
        requests = [_Request(messages, params, loop.create_future(), tools) for messages in conversations]
        self._ensure_worker(loop)
        self._pending.extend(requests)
        self._pending_rows += len(requests) * params.n
        self._last_arrival = loop.time()
        self._wake.set()
        try:
            return list(await asyncio.gather(*(r.future for r in requests)))
        finally:
            for request in requests:
                request.future.cancel()  # no-op for finished ones; the worker skips cancelled ones

    async def aclose(self) -> None:
        if self._worker_loop is not asyncio.get_running_loop():
            return  # nothing of this model runs on this event loop
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            try:
                await worker
            except asyncio.CancelledError:
                pass
        for request in self._pending:
            request.future.cancel()
        self._pending.clear()
        self._pending_rows = 0

    def prompt_ids(self, messages: ChatMessages, max_new_tokens: int, tools: list[dict] | None = None) -> list[int]:
        """Token ids of the chat-template prompt (with ``tools``, see the module's doc); too long for the model's
        context -> :class:`ContextLengthError`."""
        takes_tools = self.template_takes_tools
        shown = template_messages(messages, tools, takes_tools)
        try:
            text = self.tokenizer.apply_chat_template(shown, tools=tools if takes_tools else None, tokenize=False,
                                                      add_generation_prompt=True)
        except Exception as err:  # noqa: BLE001 - the template is the checkpoint's code: failures are about the input
            raise UserError(f"{self.name}: the chat template rejected the conversation: {_first_line(err)}") from None
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if self.max_positions is not None and len(ids) + max_new_tokens > self.max_positions:
            raise ContextLengthError(f"prompt of {len(ids)} tokens plus max_new_tokens {max_new_tokens} exceeds "
                                     f"the context of {self.name} ({self.max_positions} tokens)")
        return ids

    # ------------------------------------------------------------------ batching
    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._worker is not None and not self._worker.done():
            if self._worker_loop is loop:
                return
            if self._worker_loop.is_running():
                raise RuntimeError(f"{self.name} is serving another running event loop; "
                                   "load a second instance for this one")
        self._pending.clear()  # requests of a previous, finished event loop can no longer be answered
        self._pending_rows = 0
        self._wake = asyncio.Event()
        self._worker_loop = loop
        self._worker = loop.create_task(self._serve_requests())

    async def _serve_requests(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                self._wake.clear()
                await self._wake.wait()
            latest = loop.time() + self.max_batch_wait_ms / 1000
            while self._pending_rows < self.max_batch_size:
                remaining = min(self._last_arrival + self.batch_wait_ms / 1000, latest) - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            groups: dict[GenerationParams, list[_Request]] = {}
            for request in await self._with_prompts(self._take_batch()):
                groups.setdefault(replace(request.params, seed=None), []).append(request)
            for params, requests in groups.items():
                for part in self._within_token_budget(requests, params):
                    await self._run_group(part, params)

    def _take_batch(self) -> list[_Request]:
        batch: list[_Request] = []
        rows = 0
        while self._pending:
            n = self._pending[0].params.n
            if batch and rows + n > self.max_batch_size:
                break
            request = self._pending.popleft()
            self._pending_rows -= n
            if not request.future.done():
                batch.append(request)
                rows += n
        return batch

    def _within_token_budget(self, requests: list[_Request], params: GenerationParams) -> list[list[_Request]]:
        """``requests`` as they are when their padded rectangle fits ``max_batch_tokens`` (or it is 0); else
        sorted by prompt length and cut into the fewest consecutive parts that fit (a request too wide for
        the budget on its own is a part of its own)."""
        def width(request: _Request) -> int:
            return len(request.prompt_ids) + params.max_new_tokens

        if not requests:
            return []
        if not self.max_batch_tokens or len(requests) * params.n * max(map(width, requests)) <= self.max_batch_tokens:
            return [requests]
        return token_budget_batches(requests, width, self.max_batch_tokens, rows_per_item=params.n)

    async def _with_prompts(self, requests: list[_Request]) -> list[_Request]:
        """The ``requests`` still awaited, with their prompt ids made in a thread; one whose prompt is refused
        (by the chat template, or over the context) gets that error instead."""
        prompts = await asyncio.to_thread(self._prompts, requests)
        ready = []
        for request, prompt in zip(requests, prompts):
            if request.future.done():
                continue  # its caller stopped waiting
            if isinstance(prompt, Exception):
                request.future.set_exception(prompt)
            else:
                request.prompt_ids = prompt
                ready.append(request)
        return ready

    def _prompts(self, requests: list[_Request]) -> list[list[int] | Exception]:
        prompts: list[list[int] | Exception] = []
        for request in requests:
            try:
                prompts.append(self.prompt_ids(request.messages, request.params.max_new_tokens, request.tools))
            except Exception as err:  # noqa: BLE001 - handed to the waiting caller, who re-raises it
                prompts.append(err)
        return prompts

    async def _run_group(self, requests: list[_Request], params: GenerationParams) -> None:
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                _generation_thread(self.device), self._generate_rows, requests, params)
        except Exception as err:  # noqa: BLE001 - handed to the waiting callers, who re-raise it
            for request in requests:
                if not request.future.done():
                    request.future.set_exception(err)
            return
        finished = time.perf_counter()
        for request, choices in zip(requests, results):
            if request.tools:
                choices = [_with_tool_calls(choice) for choice in choices]
            if not request.future.done():
                request.future.set_result(Completion(
                    choices=choices, prompt_tokens=len(request.prompt_ids),
                    completion_tokens=sum(c.completion_tokens for c in choices),
                    seconds=finished - request.submitted, model=self.name,
                ))

    # ------------------------------------------------------------------ generation (the device's thread)
    def _generate_rows(self, requests: list[_Request], params: GenerationParams) -> list[list[Choice]]:
        """One left-padded ``model.generate`` for requests that share ``params``; choices per request.

        Each request is ``n`` rows: its prompt is prefilled once (all but its last token, see :meth:`_prefill`)
        and the KV cache repeated for the ``n`` rows, which then decode from that shared prefix."""
        width = max(len(request.prompt_ids) for request in requests)
        input_ids = torch.full((len(requests), width), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(requests), width), dtype=torch.long)
        for row, request in enumerate(requests):
            input_ids[row, width - len(request.prompt_ids):] = torch.tensor(request.prompt_ids)
            attention_mask[row, width - len(request.prompt_ids):] = 1
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        clock = _StepClock()
        with torch.inference_mode():
            processors = [*self._logits_processors(requests, params, width), clock]
            cache = self._prefill([request.prompt_ids[:-1] for request in requests], params.n) if width > 1 else None
            output = self.model.generate(
                input_ids=input_ids.repeat_interleave(params.n, dim=0),
                attention_mask=attention_mask.repeat_interleave(params.n, dim=0), cache=cache,
                generation_config=self._generation_config(params), logits_processor=processors,
                tokenizer=self.tokenizer,
            )
            self._costs.record_decoding(len(requests) * params.n, clock, time.perf_counter())
        self.batch_size_counts[len(requests) * params.n] += 1
        rows = output[:, width:].tolist()
        return [[self._choice(rows[i * params.n + j], params.stop) for j in range(params.n)]
                for i in range(len(requests))]

    def _prefill(self, targets: list[list[int]], n: int):
        """The KV cache of the ``targets`` (each prompt but its last token) left-padded to the longest, each
        row repeated ``n`` times; ``generate`` then feeds only the last tokens (positions count from each
        row's first real token).

        A row's longest prefix found in the prefix cache (when on) is not computed again; the rest is computed
        in forward passes over rows of similar length still to compute (:meth:`_GenerationCosts.prefill_chunks`),
        whose states are then laid side by side, and stored in the prefix cache. A model whose cache is not
        one key and value per token and layer (:func:`_keeps_every_token`) computes every row in one pass."""
        found = [self.prefix_cache.lookup(t) if self.prefix_cache is not None else (0, None) for t in targets]
        if self._plain_cache:
            todo = [i for i, target in enumerate(targets) if found[i][0] < len(target)]
            chunks = self._costs.prefill_chunks(todo, [len(targets[i]) - found[i][0] for i in todo])
        else:
            chunks = [list(range(len(targets)))]
        states = {i: found[i][1] for i in range(len(targets))}
        for chunk in chunks:
            started = time.perf_counter()
            cache, computed = self._prefill_chunk([targets[i] for i in chunk], [found[i] for i in chunk])
            self._costs.record_prefill(computed, time.perf_counter() - started)
            width = max(len(targets[i]) for i in chunk)
            for row, i in enumerate(chunk if self._plain_cache else ()):
                start = width - len(targets[i])
                states[i] = [(layer.keys[row, :, start:], layer.values[row, :, start:]) for layer in cache.layers]
                if self.prefix_cache is not None:
                    self.prefix_cache.store(targets[i], [(k.clone(), v.clone()) for k, v in states[i]])
            if len(chunk) == len(targets):  # every row in one pass (in order): its cache is the batch's
                cache.batch_repeat_interleave(n)
                return cache
        cache = transformers.DynamicCache(config=self.model.config, ddp_cache_data=right_aligned(
            [states[i] for i in range(len(targets))], [len(t) for t in targets], max(len(t) for t in targets)))
        cache.batch_repeat_interleave(n)
        return cache

    def _prefill_chunk(self, targets: list[list[int]], found: list[tuple[int, LayerStates | None]]):
        """One forward pass over ``targets`` left-padded to the longest, computing only the columns that some
        row does not have in ``found`` (cached length and states per row); its DynamicCache and how many
        (padded) token positions it computed."""
        rows, width = len(targets), max(len(target) for target in targets)
        new = max(len(target) - length for target, (length, _) in zip(targets, found))
        past = width - new
        input_ids = torch.full((rows, new), self._pad_id, dtype=torch.long)
        attention_mask = torch.zeros((rows, width), dtype=torch.long)
        for row, target in enumerate(targets):
            attention_mask[row, width - len(target):] = 1
            if target:
                tail = target[max(len(target) - new, 0):]
                input_ids[row, new - len(tail):] = torch.tensor(tail)
        cached_lengths = [max(len(target) - new, 0) for target in targets]
        cached = right_aligned([states for _, states in found], cached_lengths, past) if past else None
        cache = transformers.DynamicCache(config=self.model.config, ddp_cache_data=cached)
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        self.model(input_ids=input_ids.to(self.device), attention_mask=attention_mask.to(self.device),
                   position_ids=positions.to(self.device), cache=cache, use_cache=True, logits_to_keep=1)
        return cache, rows * new

    def _generation_config(self, params: GenerationParams):
        config = copy.deepcopy(self.model.generation_config)
        config.update(max_new_tokens=params.max_new_tokens, do_sample=False, use_cache=True,  # sampling: _RowSampler
                      eos_token_id=list(self.stop_ids), pad_token_id=self.stop_ids[0],
                      stop_strings=list(params.stop) or None)
        return config

    def _sampling(self, params: GenerationParams) -> tuple[float, float, int]:
        """(temperature, top_p, top_k): the caller's, else the checkpoint's; temperature 0 means greedy."""
        defaults = self.generation_defaults
        samples = bool(defaults.do_sample)
        temperature = params.temperature if params.temperature is not None else (
            (defaults.temperature if defaults.temperature is not None else 1.0) if samples else 0.0)
        top_p = params.top_p if params.top_p is not None else ((defaults.top_p or 1.0) if samples else 1.0)
        top_k = (defaults.top_k or 0) if samples else 0
        return temperature, top_p, top_k

    def _logits_processors(self, requests: list[_Request], params: GenerationParams, width: int) -> list:
        processors = []
        if params.bans or params.logit_bias:
            processors.append(_TokenBans(width, self._ban_sequences(params.banned_tokens),
                                         self._ban_sequences(params.banned_first_tokens, opening=True),
                                         params.logit_bias))
        temperature, top_p, top_k = self._sampling(params)
        if temperature > 0:
            seeds = [_row_seed(r.params.seed, j) for r in requests for j in range(params.n)]
            processors.append(_RowSampler(temperature, top_p, top_k, seeds, params.max_new_tokens))
        return processors

    def _choice(self, tokens: list[int], stop: tuple[str, ...]) -> Choice:
        stop_ids = set(self.stop_ids)
        end = next((i for i, token in enumerate(tokens) if token in stop_ids), None)
        text = self.tokenizer.decode(tokens[:end], skip_special_tokens=False)
        text, stopped = cut_at_stop(text, stop)
        if end is None:
            return Choice(text, "stop" if stopped else "length", len(tokens))
        return Choice(text, "stop", end if stopped else end + 1)  # a stop string ends a row without an eos token

    # ------------------------------------------------------------------ tokens
    def _find_stop_ids(self) -> tuple[int, ...]:
        """Eos ids of the generation config and tokenizer, and the end-of-turn token of the chat template."""
        eos = self.generation_defaults.eos_token_id
        ids = list(eos) if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        ids.extend(self._end_of_turn_ids())
        if not ids:
            raise UserError(f"{self.name} has no end-of-turn token (no eos id in its generation config or "
                            "tokenizer, none after a message in its chat template)")
        return tuple(dict.fromkeys(int(i) for i in ids))

    def _end_of_turn_ids(self) -> list[int]:
        """Added tokens the chat template writes right after a message's content."""
        added = {t.content: i for i, t in self.tokenizer.added_tokens_decoder.items() if t.content.strip()}
        found = []
        for messages in ([{"role": "user", "content": _SENTINEL}],
                         [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": _SENTINEL}]):
            try:
                text = self.tokenizer.apply_chat_template(messages, tokenize=False)
            except Exception:  # noqa: BLE001, S112 - a template may refuse one probe; the other may work
                continue
            after = text[text.find(_SENTINEL) + len(_SENTINEL):].lstrip() if _SENTINEL in text else ""
            matches = [token for token in added if after.startswith(token)]
            if matches:
                found.append(added[max(matches, key=len)])
        return found

    def _ban_sequences(self, banned: tuple[str, ...], opening: bool = False) -> list[tuple[int, ...]]:
        """Token sequences that spell the ``banned`` strings; with ``opening`` (first-position bans) also
        the single tokens that open with a banned word (see the module docstring)."""
        if (banned, opening) not in self._ban_cache:
            sequences: set[tuple[int, ...]] = set()
            index = self._tokens_by_text()
            for text in banned:
                for variant in (text, " " + text):
                    sequences.update((token,) for token in index.get(variant, ()))
                    ids = self.tokenizer(variant, add_special_tokens=False)["input_ids"]
                    if ids:
                        sequences.add(tuple(ids))
                if opening:
                    opens = re.compile(rf"\s*{re.escape(text)}(?![^\W\d_])")
                    sequences.update((token,) for piece, tokens in index.items() if opens.match(piece) for token in tokens)
            self._ban_cache[banned, opening] = sorted(sequences)
        return self._ban_cache[banned, opening]

    def _tokens_by_text(self) -> dict[str, list[int]]:
        """Every token id by the text it decodes to on its own (built once, on the first ban)."""
        if self._token_index is None:
            index: dict[str, list[int]] = {}
            texts = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))], skip_special_tokens=False)
            for token, text in enumerate(texts):
                index.setdefault(text, []).append(token)
            self._token_index = index
        return self._token_index


class _GenerationCosts:
    """What padding and extra forward passes cost, learnt from this model's recent calls.

    A batch's prompts are prefilled in forward passes, each over one rectangle of left-padded rows (the
    tokens the prefix cache did not have). On a CPU, rows of very different lengths waste much of a pass on
    padding; on a GPU padding is nearly free, while each extra pass costs about what a decoding step costs
    whatever its rows. :meth:`prefill_chunks` weighs the two: ``token_seconds`` is the prefill time per
    padded token, ``step_overhead`` the part of a decoding step's time that does not grow with the number
    of rows (the intercept of a line through recent (rows, seconds per step) pairs).
    """

    def __init__(self) -> None:
        self.token_seconds: float | None = None
        self.step_overhead: float | None = None
        self._steps: deque[tuple[int, float]] = deque(maxlen=32)

    def record_prefill(self, padded_tokens: int, seconds: float) -> None:
        per_token = seconds / max(padded_tokens, 1)
        self.token_seconds = per_token if self.token_seconds is None else 0.7 * self.token_seconds + 0.3 * per_token

    def record_decoding(self, rows: int, clock: _StepClock, finished: float) -> None:
        if clock.calls < 2:
            return
        self._steps.append((rows, (finished - clock.first) / (clock.calls - 1)))
        rows_seen, seconds = zip(*self._steps)
        cheapest = min(seconds)  # the overhead is at most a whole step of the cheapest call
        if len(set(rows_seen)) > 1:
            intercept = statistics.linear_regression(rows_seen, seconds).intercept
            self.step_overhead = min(cheapest, max(intercept, cheapest / 4))  # a noisy fit never makes passes free
        else:
            self.step_overhead = cheapest / 2  # a guess until calls of different sizes give a line

    def prefill_chunks(self, rows: list[int], lengths: list[int]) -> list[list[int]]:
        """``rows`` (with ``lengths``: tokens each must compute) cut, shortest first, into the forward passes
        with the least estimated time; each pass's rows in ascending order."""
        ordered = [row for _, row in sorted(zip(lengths, rows))]
        if len(ordered) < 2 or self.token_seconds is None or self.step_overhead is None:
            return [sorted(ordered)] if ordered else []
        widths = sorted(lengths)
        best, cut = [0.0], [0]  # best[j]: least time for the first j rows; their last pass starts at cut[j]
        for j in range(1, len(ordered) + 1):
            cost, start = min((best[i] + self.token_seconds * (j - i) * widths[j - 1] + self.step_overhead, i)
                              for i in range(j))
            best.append(cost)
            cut.append(start)
        chunks, end = [], len(ordered)
        while end > 0:
            chunks.append(sorted(ordered[cut[end]:end]))
            end = cut[end]
        return chunks[::-1]


class _StepClock:
    """Logits processor that only watches: when the first token's logits arrived, and how many steps ran."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.calls = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.first is None:
            self.first = time.perf_counter()
        self.calls += 1
        return scores


class _TokenBans:
    """Logits processor: logit bias, then bans everywhere and at the first generated position."""

    def __init__(self, prompt_width: int, everywhere: list[tuple[int, ...]], first: list[tuple[int, ...]],
                 logit_bias: tuple[tuple[int, float], ...]) -> None:
        self.prompt_width = prompt_width
        self.single = sorted({s[0] for s in everywhere if len(s) == 1})
        self.sequences = [s for s in everywhere if len(s) > 1]
        self.first = first
        self.bias_ids = [token for token, _ in logit_bias]
        self.bias_values = [bias for _, bias in logit_bias]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        step = input_ids.shape[1] - self.prompt_width
        if self.bias_ids:
            scores[:, self.bias_ids] += torch.tensor(self.bias_values, dtype=scores.dtype, device=scores.device)
        if self.single:
            scores[:, self.single] = -torch.inf
        for sequence in self.sequences:
            before = len(sequence) - 1
            if step >= before:
                self._ban_after(input_ids[:, input_ids.shape[1] - before:], sequence, scores)
        for sequence in self.first:
            if step == len(sequence) - 1:
                self._ban_after(input_ids[:, self.prompt_width:], sequence, scores)
        return scores

    @staticmethod
    def _ban_after(generated: torch.LongTensor, sequence: tuple[int, ...], scores: torch.FloatTensor) -> None:
        """Mask ``sequence[-1]`` in the rows whose ``generated`` tokens are ``sequence[:-1]``."""
        if len(sequence) == 1:
            scores[:, sequence[0]] = -torch.inf
            return
        prefix = torch.tensor(sequence[:-1], device=generated.device)
        rows = (generated == prefix).all(dim=1)
        scores[rows, sequence[-1]] = -torch.inf


class _RowSampler:
    """Logits processor that samples (temperature, top-k, top-p) with one generator per row.

    It leaves only the sampled token finite, so greedy decoding after it picks that token. A row's uniform
    draws for all ``steps`` are taken from its generator at once (the numbers one draw per step gives).
    Top-p keeps, in order of probability, each token whose higher-ranked tokens hold at most ``top_p``; the
    tokens are ranked among a row's :data:`NUCLEUS_CANDIDATES` most probable when its nucleus ends there
    (sorting whole rows of a large vocabulary is most of a CPU step's sampling time), else over the whole row.
    """

    def __init__(self, temperature: float, top_p: float, top_k: int, seeds: list[int], steps: int) -> None:
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.uniforms = torch.stack([torch.rand(steps, generator=torch.Generator().manual_seed(seed)) for seed in seeds])
        self.step = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float() / self.temperature
        if 0 < self.top_k < logits.shape[1]:
            kth = torch.topk(logits, self.top_k, dim=1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, -torch.inf)
        probs = torch.softmax(logits, dim=1)
        if self.top_p < 1:
            probs = self._nucleus(probs)
        cdf = probs.cumsum(dim=1)
        uniform = self.uniforms[:, self.step].to(cdf.device)
        self.step += 1
        chosen = torch.searchsorted(cdf, (uniform * cdf[:, -1]).unsqueeze(1), right=True)
        chosen = chosen.clamp(max=scores.shape[1] - 1)
        return torch.full_like(scores, -torch.inf).scatter(1, chosen, 0.0)

    def _nucleus(self, probs: torch.Tensor) -> torch.Tensor:
        """``probs`` with the tokens outside each row's top-p nucleus set to 0."""
        candidates = min(NUCLEUS_CANDIDATES, probs.shape[1])
        top, ids = probs.topk(candidates, dim=1)
        outside = top.cumsum(dim=1) - top > self.top_p
        kept = (~outside).sum(dim=1, keepdim=True)
        edge = top.gather(1, (kept - 1).clamp(min=0)) != top.gather(1, kept.clamp(max=candidates - 1))
        within = outside[:, -1] & edge.squeeze(1)  # the nucleus ends among the candidates, no tie across its edge
        nucleus = torch.zeros_like(probs).scatter(1, ids, top.masked_fill(outside, 0.0))
        if not within.all():
            rest = (~within).nonzero().squeeze(1)
            ranked, order = probs[rest].sort(dim=1, descending=True)
            outside = ranked.cumsum(dim=1) - ranked > self.top_p
            nucleus[rest] = probs[rest].scatter(1, order, ranked.masked_fill(outside, 0.0))
        return nucleus


_GENERATION_THREADS: dict[str, ThreadPoolExecutor] = {}


def _generation_thread(device: str) -> ThreadPoolExecutor:
    """One thread per device runs every generate call there, for all models: calls on a device never
    overlap (they would only compete), and torch keeps a single pool of CPU threads."""
    if device not in _GENERATION_THREADS:
        _GENERATION_THREADS[device] = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"userloop-{device}")
    return _GENERATION_THREADS[device]


def _row_seed(seed: int | None, sample: int) -> int:
    if seed is None:
        return random.getrandbits(63)
    return (seed + sample * 0x9E3779B97F4A7C15) % 2**63


def _keeps_every_token(config) -> bool:
    """Whether every layer of a model's DynamicCache keeps one key and value per token (no sliding window,
    no shared or linear-attention layers): only then can a row's states be cut out, reused and laid beside
    other rows'."""
    layers = transformers.DynamicCache(config=config).layers
    return all(type(layer) is transformers.cache_utils.DynamicLayer for layer in layers)


def _device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str) or not device.split(":")[0] in ("cpu", "cuda", "mps"):
        raise UserError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} was asked for but torch sees no CUDA GPU")
    return device


def _dtype(dtype: str, device: str) -> torch.dtype:
    """bf16 on GPUs that support it (fp16 on others), float32 on CPU, unless asked otherwise."""
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in DTYPES:
        raise UserError(f"dtype must be 'auto' or one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _load(path: str, device: str, dtype: torch.dtype, trust_remote_code: bool):
    local = Path(path).expanduser()
    if not local.exists() and path.startswith(("/", "./", "../", "~", ".")):
        raise UserError(f"no such model folder: {path}")
    source = str(local) if local.exists() else path
    if local.exists():  # no "Loading weights" bar for a local folder (a Hub download keeps its progress)
        transformers.utils.logging.disable_progress_bar()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
        model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=dtype,
                                                                  trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError, ImportError) as err:
        raise UserError(f"cannot load {path!r} with transformers: {_first_line(err)}") from None
    if not tokenizer.chat_template:
        raise UserError(f"{path!r} has no chat template (chat_template.jinja or tokenizer_config.json); "
                        "hf: models need one")
    return tokenizer, model.to(device).eval()


# Set per call by the provider; left in the model's config, generate() would merge them into every call.
_PER_CALL_FIELDS = ("do_sample", "temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
                    "max_length", "max_new_tokens", "num_beams", "num_return_sequences", "stop_strings",
                    "eos_token_id", "pad_token_id", "transformers_version")


def _without_sampling_and_length(config):
    """The checkpoint's generation config without the fields each call sets (penalties and the like stay)."""
    kept = {k: v for k, v in config.to_diff_dict().items() if k not in _PER_CALL_FIELDS}
    return transformers.GenerationConfig.from_dict(kept)


def _takes_tools(chat_template: str | dict | None) -> bool:
    """Whether a chat template (or any of a tokenizer's named templates) reads a ``tools`` variable."""
    sources = chat_template.values() if isinstance(chat_template, dict) else [chat_template or ""]
    return any(re.search(r"\btools\b", source) for source in sources)


def _with_tool_calls(choice: Choice) -> Choice:
    """``choice`` with the tool calls its text holds moved into :attr:`Choice.tool_calls`."""
    text, calls = calls_in_text(choice.text)
    return replace(choice, text=text, tool_calls=calls) if calls else choice


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return (lines[0] if lines else type(err).__name__)[:300]
