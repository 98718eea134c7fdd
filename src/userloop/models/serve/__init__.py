"""``userloop serve``: an OpenAI-compatible HTTP server for a model (protocol / serving / app)."""

from userloop.models.serve.app import build_app, serve

__all__ = ["build_app", "serve"]
