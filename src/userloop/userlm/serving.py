"""What ``userloop serve`` runs: a model over the OpenAI chat-completions API, or a user LM as a user simulator
behind the UserLM-8b guardrails (docs/integrations.md), from one :class:`ServeConfig` checked before anything loads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from userloop.config import avoid_termination_turns, option
from userloop.errors import UserError


@dataclass
class ServeConfig:
    """How ``userloop serve`` listens, and the user simulator's options (``simulator``)."""

    port: int = option(8000, "port to listen on (0: any free port, printed at start)")
    host: str = option("127.0.0.1", "address to bind; 0.0.0.0 exposes the server beyond this machine")
    api_key_env: str | None = option(None, "environment variable holding the API key clients must send")
    api_key: str | None = option(None, "API key clients must send (other users can see command lines: prefer --api-key-env)")
    model_name: str | None = option(None, "model id clients ask for (default: SPEC without its prefix)")
    device: str = option("auto", "hf: auto, cpu, cuda, cuda:N or mps")
    dtype: str = option("auto", "hf: auto (bf16 on GPUs that support it, fp16 on others, float32 on CPU), float32, bfloat16, float16")
    max_batch_size: int = option(64, "hf: most conversations generated together")
    allowed_host: tuple[str, ...] = option((), "another Host name clients reach the server by (repeatable; localhost, "
                                               "127.0.0.1, [::1], --host and the address a connection arrives on are always accepted)")
    allowed_origin: tuple[str, ...] = option((), "a web page origin (http://HOST:PORT) allowed to call the server from a "
                                                 "browser (repeatable; other pages are refused)")
    simulator: bool = option(False, "serve SPEC as a user simulator behind the UserLM-8b guardrails: requests send the "
                                    "conversation, answers are the user's next turn (docs/integrations.md)")
    avoid_termination_turns: str | None = option(None, "--simulator: how many user turns may not end the conversation, "
                                                       "a number or 'always' (default 2)")
    max_attempts: int | None = option(None, "--simulator: most samples drawn for one turn before the fallback (default 8)")
    max_new_tokens: int | None = option(None, "--simulator: most tokens per sample (default 96; a request's max_tokens "
                                              "can only lower it)")
    perspective: str | None = option(None, "--simulator: the roles requests send: 'assistant' (the user's turns as user; "
                                           "default) or 'user' (swapped, as harnesses with a prompted user such as "
                                           "tau2-bench send them)")
    end_text: str | None = option(None, "--simulator: text a conversation's last user turn ends with, for harnesses that "
                                        "read the end from the text (tau2-bench: '###STOP###'); finish_reason says it anyway")
    intent_tag: str | None = option(None, "--simulator: read the intent inside <TAG>...</TAG> of the system message "
                                          "(tau2-bench: scenario), not the whole message")


def serve_model(spec: str, config: ServeConfig, on_ready: Callable[[str, str], None]) -> None:
    """Serve ``spec`` until interrupted; ``on_ready(base_url, model_name)`` once it listens. Every mistake in the
    options is a :class:`UserError` before the model loads."""
    import ipaddress
    import os
    from dataclasses import replace

    from userloop.models.registry import parse_spec
    from userloop.models.serve import serve

    prefix, _ = parse_spec(spec)
    simulator_options = {"--avoid-termination-turns": config.avoid_termination_turns, "--max-attempts": config.max_attempts,
                         "--max-new-tokens": config.max_new_tokens, "--perspective": config.perspective,
                         "--end-text": config.end_text, "--intent-tag": config.intent_tag}
    if not config.simulator and any(value is not None for value in simulator_options.values()):
        given = next(name for name, value in simulator_options.items() if value is not None)
        raise UserError(f"{given} applies only to a user simulator: add --simulator")
    if not config.simulator and prefix not in ("hf", "scripted"):
        raise UserError(f"serve takes hf: or scripted: models, not {prefix}: ({prefix}: models are already served elsewhere)")
    if not 0 <= config.port <= 65535:
        raise UserError(f"--port must be in 0..65535, got {config.port}")
    if config.api_key_env and config.api_key:
        raise UserError("give either --api-key-env or --api-key, not both")
    api_key = config.api_key
    if config.api_key_env:
        api_key = os.environ.get(config.api_key_env)
        if not api_key:
            raise UserError(f"--api-key-env {config.api_key_env}: that environment variable is not set")
    try:
        loopback = config.host == "localhost" or ipaddress.ip_address(config.host.strip("[]")).is_loopback
    except ValueError:
        loopback = False
    if not loopback and not api_key:
        raise UserError(f"--host {config.host} exposes the server beyond this machine: also set an API key clients must "
                        "send (--api-key-env NAME)")
    local = prefix == "hf" or spec.startswith("prompted:hf:")
    options = {"device": config.device, "dtype": config.dtype, "max_batch_size": config.max_batch_size} if local else {}
    listening = {"host": config.host, "port": config.port, "api_key": api_key, "model_name": config.model_name,
                 "on_ready": on_ready, "allowed_hosts": config.allowed_host, "allowed_origins": config.allowed_origin}
    if not config.simulator:
        serve(spec, **listening, **options)
        return
    from userloop.models.serve.simulator_protocol import harness_options
    from userloop.userlm.simulator import DEFAULT_PARAMS, GuardrailConfig
    from userloop.userlm.simulator_server import serve_simulator

    harness = harness_options(config.perspective or "assistant", config.end_text, config.intent_tag)
    chosen = {} if config.max_attempts is None else {"max_attempts": config.max_attempts}
    if config.avoid_termination_turns is not None:
        chosen["avoid_termination_turns"] = avoid_termination_turns(config.avoid_termination_turns)
    params = DEFAULT_PARAMS if config.max_new_tokens is None else replace(DEFAULT_PARAMS, max_new_tokens=config.max_new_tokens)
    serve_simulator(spec, GuardrailConfig(**chosen), params, harness, **listening, **options)
