"""User language models: LMs that write the USER turns of a conversation, given a task intent.

After "Flipping the Dialogue" (arXiv 2510.06552) and microsoft/UserLM-8b: the chat template and
special tokens (:mod:`.template`), flipping conversations into training samples (:mod:`.flip`), a
tokenizer for training from scratch (:mod:`.tokenizer`), training (:mod:`.train`), high-level intents
for conversations (:mod:`.intents`) and the guarded user simulator (:mod:`.simulator`).
Submodules import their heavy dependencies lazily; import what you need from them.
"""
