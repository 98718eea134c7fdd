"""Simulated conversations at scale: scenarios, the lock-step engine, run folders, scoring, reports.

    userloop simulate --user hf:./user-lm --assistant openai:gpt-4o@URL --scenarios tasks.jsonl --n 4 --out RUN

Submodules are imported on use (the engine needs the model stack; scenario files do not):
:mod:`~userloop.simulate.engine` (the lock-step engine), :mod:`~userloop.simulate.records` (the typed record
of a simulated conversation), :mod:`~userloop.simulate.runs` (run folders,
resume, summaries, comparisons), :mod:`~userloop.simulate.assistant_eval` (single-turn vs simulated
multi-turn), :mod:`~userloop.simulate.scenarios`, :mod:`~userloop.simulate.answer_check`,
:mod:`~userloop.simulate.reply_kinds`, :mod:`~userloop.simulate.reveal_stats`, :mod:`~userloop.simulate.domains` (tool
domains: the built-in shop and tau-bench-style folders, docs/agents.md). See docs/simulate.md.
"""
