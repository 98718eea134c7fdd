"""The demo's static HTML report (:func:`build_report`) and the conversation viewer."""

from userloop.report.html import build_report

__all__ = ["build_report"]
