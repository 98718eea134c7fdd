"""The testbed's scripted assistant: replies with a varied, recorded style and occasional errors.

Each reply has an act (answer, clarification question, discussion that misses the request, refusal)
and a style on four axes that mirror the persona fields: length (short / medium / long), structure
(prose / list), tone (casual / formal) and vocabulary (simple / mixed / technical). The style is
drawn per conversation and changes when the user asks for a change, so feedback has something to
react to and something to fix.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace

from userloop.testbed.families import Answer, Task, pick

LENGTH_WORDS = {"short": (20, 50), "medium": (80, 100), "long": (140, 210)}
STYLE_VALUES = {"length": ("short", "medium", "long"), "structure": ("prose", "list"),
                "tone": ("casual", "formal"), "vocabulary": ("simple", "mixed", "technical")}
OPENERS = {"formal": ("Certainly.", "Of course.", "Thank you for your question.", "I would be glad to assist."),
           "casual": ("Sure thing!", "Sure!", "Happy to help!", "Ok, so here's the deal!", "Hey, no problem!")}
CLOSERS = {"formal": ("Please let me know if you require further assistance.", "I hope this information is helpful; kindly let me know if anything is unclear.",
                      "I would be happy to assist further if needed."),
           "casual": ("Hope that helps!", "Let me know if you wanna tweak anything!", "Cheers!", "Shout if you need more!")}
CONNECTORS = {"formal": ("Furthermore, ", "Additionally, ", "Moreover, ", "Consequently, ", "Therefore, "),
              "casual": ("Also, ", "Plus, ", "Basically, ", "Honestly, ", "Btw, ")}
SIMPLE = (
    "It is a good idea to check the result once more.", "Take it one step at a time and it is easy.",
    "You can try it out and see how it goes.", "If something looks off, just ask and we can fix it.",
    "Keep a note of what you did so you can do it again.", "Small changes are fine, so do not worry too much.",
    "A quick look at each part helps you spot mistakes.", "Most people find this part the hard bit at first.",
    "It works the same way in most cases.", "You can start small and add more later.",
    "Think of it like a list of things to do in order.", "Try it with a simple case first, then a big one.",
    "If you get stuck, go back to the first step.", "The main thing is to keep it clear and short.",
)
TECHNICAL = (
    "Methodologically, verifying intermediate calculations systematically prevents compounding inaccuracies.",
    "Computationally, this approach demonstrates straightforward deterministic characteristics.",
    "Considering alternative interpretations ensures comprehensive, unambiguous specifications.",
    "Documentation of assumptions substantially improves reproducibility and maintainability.",
    "Incremental experimentation facilitates identification of problematic configurations.",
    "Established conventions recommend explicit parameterisation over implicit dependencies.",
    "Quantitative validation against independent references strengthens confidence considerably.",
    "Edge-case considerations frequently dominate practical implementation difficulties.",
    "Decomposing complicated procedures into independent components simplifies troubleshooting.",
    "Consistency between representations guarantees interoperability across heterogeneous environments.",
    "Empirically, practitioners underestimate preparation requirements surprisingly frequently.",
    "Theoretical justification complements practical experimentation remarkably effectively.",
)
MIXED = (  # about one long word in ten: between the two registers
    "It is a good idea to check the calculation once more.", "Take it one step at a time and keep it consistent.",
    "You can try it out and compare the results afterwards.", "If something looks off, ask and we can investigate it.",
    "Keep a short record so you can reproduce what you did.", "Small adjustments are fine, so do not worry too much.",
    "A quick look at each part helps you spot inconsistencies.", "Many people find this part the most difficult bit.",
    "It works the same way in most practical cases.", "You can start small and add more functionality later.",
    "Think of it as a checklist of steps to follow.", "Try a simple example first, then a realistic one.",
)
LEADS_TECHNICAL = ("The following analysis addresses your question systematically.",
                   "Below is a comprehensive, methodical treatment of the question.")
CONTRACTIONS = (("It is", "It's"), ("it is", "it's"), ("do not", "don't"), ("Do not", "Don't"), ("I am", "I'm"),
                ("you are", "you're"), ("Here is", "Here's"), ("Let us", "Let's"), ("that is", "that's"),
                ("you will", "you'll"), ("I have", "I've"), ("does not", "doesn't"), ("is not", "isn't"), ("cannot", "can't"),
                ("I would", "I'd"), ("you would", "you'd"), ("I will", "I'll"))
_CONTRACT = re.compile(r"\b(?:" + "|".join(re.escape(a) for a, _ in CONTRACTIONS) + r")\b")
_CONTRACTED = dict(CONTRACTIONS)


@dataclass(frozen=True, slots=True)
class Style:
    length: str
    structure: str
    tone: str
    vocabulary: str


@dataclass(slots=True)
class Reply:
    """An assistant turn and the choices behind it (recorded in the truth)."""

    text: str
    act: str              # answer | clarification | discussion | refusal | acknowledgement
    style: Style
    correct: bool | None  # answer acts on checkable tasks: does it pass the check
    correction: str | None = None


# How the assistant's first style relates to the user's preference: it matches each axis with this
# chance (it reads the request well), otherwise it picks any value.
MATCH_CHANCE = 0.7
ERROR_RATE = 0.12          # answers that fail the task's check (when every shard is known)
CLARIFY_CHANCE = 0.45      # with shards still unknown, ask instead of attempting
DISCUSSION_RATE = 0.02     # replies that talk around the request without doing it
REFUSAL_RATE = 0.01
FIX_CHANCE = 0.85          # a complaint about one axis or an error is fixed in the next reply


def initial_style(rng: random.Random, persona) -> Style:
    preferred = {"length": "short" if persona.detail == "brief" else "long",
                 "structure": "list" if persona.structure == "structured" else "prose",
                 "tone": persona.tone,
                 "vocabulary": {"novice": "simple", "intermediate": "mixed", "expert": "technical"}[persona.expertise]}
    chosen = {axis: preferred[axis] if rng.random() < MATCH_CHANCE else pick(rng, values)
              for axis, values in STYLE_VALUES.items()}
    return Style(**chosen)


def adjust(style: Style, reason: str) -> Style:
    """The style after the user asked for a change (feedback ``reason``)."""
    change = {"too_long": ("length", "short"), "too_short": ("length", "long"), "wants_structure": ("structure", "list"),
              "wants_prose": ("structure", "prose"), "too_casual": ("tone", "formal"), "too_formal": ("tone", "casual"),
              "too_technical": ("vocabulary", "simple"), "too_simple": ("vocabulary", "technical")}.get(reason)
    if change is None:
        return style
    axis, value = change
    if axis == "vocabulary":  # one step at a time: technical -> mixed -> simple, and back
        levels = STYLE_VALUES["vocabulary"]
        step = -1 if value == "simple" else 1
        value = levels[min(2, max(0, levels.index(style.vocabulary) + step))]
    return replace(style, **{axis: value})


def _contract(text: str) -> str:
    return _CONTRACT.sub(lambda m: _CONTRACTED[m.group(0)], text)


def _words(text: str) -> int:
    return len(text.split())


def _fillers(rng: random.Random, vocabulary: str) -> list[str]:
    bank = {"simple": SIMPLE, "mixed": MIXED, "technical": TECHNICAL}[vocabulary]
    return rng.sample(bank, len(bank))


def render(rng: random.Random, style: Style, lead: str, points: list[str], block: str | None = None) -> str:
    """Turn the substance of a reply into text with the given style."""
    low, high = LENGTH_WORDS[style.length]
    target = rng.randint(low, high)
    if style.vocabulary == "technical":
        lead = pick(rng, LEADS_TECHNICAL) + " " + lead
    opener, closer = pick(rng, OPENERS[style.tone]), pick(rng, CLOSERS[style.tone])
    fillers = _fillers(rng, style.vocabulary)
    used = _words(opener) + _words(lead) + _words(closer) + (_words(block) if block else 0)
    keep = points if style.length != "short" else points[-2:]
    used += sum(_words(p) for p in keep)
    extra: list[str] = []
    connectors = CONNECTORS[style.tone]
    at_least = 0 if style.vocabulary == "simple" else 1  # the register shows even in a short reply
    while fillers and (used < target or len(extra) < at_least):
        sentence = fillers.pop()
        if rng.random() < 0.5:
            sentence = pick(rng, connectors) + sentence[0].lower() + sentence[1:]
        extra.append(sentence)
        used += _words(sentence)
    items = keep + extra
    if style.structure == "list":
        while len(items) < 3 and fillers:
            items.append(fillers.pop())
        body = "\n".join(f"- {item}" for item in items)
        parts = [opener + " " + lead, body]
    else:
        parts = [" ".join([opener, lead, *keep]), " ".join(extra)]
    if block:
        parts.insert(1, block)
    parts.append(closer)
    text = "\n\n".join(p for p in parts if p)
    if style.tone == "casual":
        text = _contract_outside_code(text)
    return text


def _contract_outside_code(text: str) -> str:
    pieces = text.split("```")
    return "```".join(_contract(p) if i % 2 == 0 else p for i, p in enumerate(pieces))


def answer_reply(rng: random.Random, style: Style, answer: Answer) -> Reply:
    text = render(rng, style, answer.lead, answer.points, answer.block)
    return Reply(text, "answer", style, answer.correct, answer.correction)


def clarification_reply(rng: random.Random, style: Style, question: str) -> Reply:
    ask = pick(rng, ("Before I answer, could you tell me {q}?", "To give you an accurate answer, I need to know {q}.",
                     "Could you clarify {q}?", "One question first: {q}?"))
    opener = pick(rng, OPENERS[style.tone])
    text = f"{opener} {ask.format(q=question)}"
    return Reply(_contract(text) if style.tone == "casual" else text, "clarification", style, None)


def discussion_reply(rng: random.Random, style: Style, task: Task) -> Reply:
    lead = pick(rng, (f"There are many ways to think about {task.topic}.", f"{task.topic[:1].upper() + task.topic[1:]} is an interesting subject.",
                      "People approach this kind of question in different ways."))
    return Reply(render(rng, style, lead, []), "discussion", style, False)


def refusal_reply(rng: random.Random, style: Style) -> Reply:
    text = pick(rng, ("I am sorry, but I cannot help with that request.", "Unfortunately I am not able to help with that.",
                      "I cannot assist with this, I am afraid."))
    return Reply(_contract(text) if style.tone == "casual" else text, "refusal", style, None)


def acknowledgement_reply(rng: random.Random, style: Style) -> Reply:
    text = pick(rng, ({"formal": "You are most welcome.", "casual": "You're welcome!"}[style.tone],
                      {"formal": "It was my pleasure to assist.", "casual": "Anytime, glad it helped!"}[style.tone],
                      {"formal": "I am glad that was helpful.", "casual": "Awesome, glad I could help!"}[style.tone]))
    return Reply(text, "acknowledgement", style, None)
