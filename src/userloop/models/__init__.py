"""One interface to chat models: local transformers, OpenAI-compatible servers, vLLM, scripted and mock replies.

    from userloop.models import GenerationParams, load_model

    model = load_model("hf:./my-user-lm")                     # or openai:MODEL@http://127.0.0.1:8000/v1
    [completion] = model.generate([[{"role": "user", "content": "Hi"}]], GenerationParams(max_new_tokens=64))
    print(completion.text, completion.finish_reason)

Providers are imported only when a spec names them (see :mod:`userloop.models.registry`).
"""

from userloop.models.base import Capabilities, ChatModel, Choice, Completion, GenerationParams, ModelError
from userloop.models.registry import load_model
from userloop.models.tools import ToolCall, ToolError

__all__ = ["Capabilities", "ChatModel", "Choice", "Completion", "GenerationParams", "ModelError", "ToolCall",
           "ToolError", "load_model"]
