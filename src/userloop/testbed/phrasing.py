"""How simulated users write: request frames, context, feedback phrases, and their own noise.

A user turn is built from labelled segments (greeting, context, request, feedback, ...); each segment
gets the user's noise (typos, lower case) before they are joined, so the truth can quote the
feedback span exactly as it appears in the turn.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from userloop.testbed.families import Shard, Task, pick
from userloop.testbed.persona import Persona

GREETINGS = {"formal": ("Hello.", "Good morning.", "Hi there.", "Good evening.", "Hello,"),
             "casual": ("hey", "hi", "yo", "hey there", "hiya", "heyy", "hello!")}
NOUN_FRAMES = {  # x is a noun phrase: "a Python function that ...", "an email to my landlord about ..."
    "formal": ("Could you please write {x}?", "I would like {x}.", "Would you be able to write {x}?", "Please write {x}.",
               "I need {x}, please.", "Could you help me with {x}?", "Can you draft {x}?", "I am looking for {x}.",
               "Could you put together {x}?", "I would appreciate {x}.", "May I ask you for {x}?", "Kindly prepare {x}."),
    "casual": ("write {x}", "can u write {x}", "i need {x}", "gimme {x}", "can you make {x}", "need {x} asap",
               "help me write {x}", "could you do {x}", "write me {x} pls", "make {x}", "yo i need {x}", "can i get {x}"),
}
SENTENCE_FRAMES = {  # x is a sentence or question
    "formal": ("{X}", "{X} Could you help?", "I have a question. {X}", "Could you help with the following? {X}",
               "{X} I would appreciate your help.", "I wonder if you could help. {X}", "{X} Thank you in advance.",
               "Quick question: {X}"),
    "casual": ("{x}", "{x} help", "ok so {x}", "quick q: {x}", "{x} lol", "hey so {x}", "{x}??", "question: {x}",
               "so basically {x}", "{x} thx"),
}
EXPERTISE_CONTEXT = {
    "novice": ("I'm new to this.", "sorry if this is a silly question.", "I'm not very good at this stuff.", "I'm just a beginner.",
               "I don't really know much about this."),
    "intermediate": ("",),
    "expert": ("I work with this a lot, so skip the basics.", "I'm fairly experienced, I just want a second opinion.",
               "I already know the theory.", "I do this professionally."),
}
FAMILY_CONTEXT = {
    "math": ("My kid has something like this for homework.", "I'm trying to plan ahead.", "Money is tight this month.",
             "I keep getting a different number.", "I want to double check my maths."),
    "code": ("It's for a small script at work.", "I'm practising for interviews.", "This is part of a bigger project.",
             "I'm learning Python.", "My version keeps failing."),
    "fact": ("It came up in a quiz.", "My friend and I are arguing about it.", "I'm studying for an exam.",
             "My kid asked me and I wasn't sure.", "I saw it in a documentary."),
    "writing": ("It needs to sound natural.", "I'm not great with words.", "I have to send it today.",
                "It's my first time writing one of these.", "I want to get it right."),
    "recommendation": ("I've been bored lately.", "I want to try something new.", "It's for this weekend.",
                       "A friend asked me for ideas.", "I'm stuck in a rut."),
}
STATED_PREFERENCES = {  # users who state one preference up front
    ("detail", "brief"): ("keep it short", "just the short answer please", "brief answer pls"),
    ("detail", "detailed"): ("please explain in detail", "give me a thorough answer", "detailed answer pls"),
    ("structure", "structured"): ("bullet points please", "use a list", "step by step please"),
    ("structure", "prose"): ("no lists please, just a paragraph", "write it as normal text"),
    ("tone", "formal"): ("keep it professional", "please keep a formal tone"),
    ("tone", "casual"): ("keep it casual", "no need to be formal"),
}
CONTINUATIONS = {"formal": ("Also, {x}.", "In addition, {x}.", "I should mention that {x}.", "One more detail: {x}.",
                            "I forgot to mention that {x}."),
                 "casual": ("also {x}", "oh and {x}", "forgot to say {x}", "btw {x}", "{x}", "oh also {x}")}
CLARIFICATION_ANSWERS = {"formal": ("{X}.", "Certainly: {x}.", "Yes, {x}.", "To answer your question, {x}.", "Sure, {x}."),
                         "casual": ("{x}", "oh right, {x}", "yeah {x}", "{x} i guess", "ok {x}")}
FEEDBACK = {  # reason -> (feedback type, formal phrasings, casual phrasings)
    "too_long": ("make_aware_with_correction",
                 ("That is too long. Could you make it shorter?", "Could you condense this into a few sentences?",
                  "This is more than I need; a brief version would be better.", "Please shorten that considerably."),
                 ("too long", "way too long, shorter pls", "tl;dr, can you shorten it", "make it shorter", "can u cut it down")),
    "too_short": ("ask_for_clarification",
                  ("Could you elaborate on that?", "Could you explain this in more detail?",
                   "That is a little brief; could you expand on it?", "Could you go into more depth?"),
                  ("can u explain more", "more detail pls", "that's kinda short, can you go deeper", "elaborate?")),
    "wants_structure": ("make_aware_with_correction",
                        ("Could you present this as bullet points?", "Could you put this into numbered steps?",
                         "Please format this as a list."),
                        ("can you use bullet points", "put it in a list pls", "bullets plz", "can u break it into steps")),
    "wants_prose": ("make_aware_with_correction",
                    ("Could you write this as a paragraph instead of a list?",
                     "Please present it as continuous prose rather than bullet points."),
                    ("no bullet points pls, just write it normally", "can you write it as a paragraph", "less listy pls")),
    "too_casual": ("make_aware_with_correction",
                   ("Could you use a more professional tone?", "Please keep the tone formal.",
                    "That is a little informal; could you rephrase it more formally?"),
                   ("can u make it sound more professional", "less casual pls", "bit too chatty, more professional pls")),
    "too_formal": ("make_aware_with_correction",
                   ("Could you make the tone a bit more relaxed?", "That sounds rather stiff; a friendlier tone would be better."),
                   ("too formal lol, chill", "can you say it more casually", "less stiff pls")),
    "too_technical": ("ask_for_clarification",
                      ("I do not understand. Could you explain it more simply?", "Could you explain that in simpler terms?",
                       "That is quite technical; could you put it in plain language?"),
                      ("i don't get it, explain simpler", "huh? in normal words pls", "eli5 pls", "too complicated, simpler pls")),
    "too_simple": ("make_aware_with_correction",
                   ("I am familiar with the basics; could you give a more technical explanation?",
                    "Could you go into the technical details?"),
                   ("i know the basics, give me the technical version", "more technical pls", "skip the basics")),
}
WRONG_WITH_CORRECTION = {"formal": ("That is not correct: {c}.", "I believe there is an error: {c}.", "That does not seem right, {c}."),
                         "casual": ("that's wrong, {c}", "no, {c}", "nope, {c}", "hmm {c}")}
WRONG_WITHOUT_CORRECTION = {"formal": ("That does not seem right. Could you check it again?", "I think there is a mistake somewhere.",
                                       "Are you sure? That does not look correct."),
                            "casual": ("that's wrong", "are you sure? doesn't look right", "hmm that's not right", "check again pls")}
REPHRASE = {"formal": ("That is not what I asked. {X}", "Let me rephrase: {x}", "To be clear, {x}", "I meant: {x}"),
            "casual": ("no, {x}", "that's not what i asked. {x}", "i mean {x}", "again: {x}")}
THANKS = {"formal": ("Thank you, that is very helpful.", "Thank you very much.", "That is exactly what I needed, thank you.",
                     "Perfect, thank you.", "Many thanks."),
          "casual": ("thanks!", "thx", "perfect, ty", "awesome thanks", "cool, thanks", "great, that works", "nice ty")}
EXTEND = {"formal": ("Could you tell me more about {t}?", "I would like to know more about {t}.", "What else should I know about {t}?"),
          "casual": ("tell me more about {t}", "what else about {t}?", "more on {t}?", "can u explain {t} a bit more")}
NEXT_REQUEST = {"formal": ("Also, ", "One more thing. ", "Next, ", ""), "casual": ("also ", "ok now ", "next one: ", "")}
VARIATION = {"formal": ("Now could you do a similar one? ", "Let us try another one. ", "Could you do the same for this? "),
             "casual": ("now another one: ", "same thing but ", "ok do one more: ", "now this one ")}


@dataclass(slots=True)
class Segment:
    kind: str    # greeting | context | preference | request | feedback | acknowledgement
    text: str


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _end(text: str) -> str:
    return text if text[-1:] in ".?!" else text + "."


def _frame(rng: random.Random, register: str, task: Task, content: str, noun: bool) -> str:
    if noun:
        return pick(rng, NOUN_FRAMES[register]).format(x=content)
    x = content if content[-1:] == "?" else content.rstrip(".")
    frame = pick(rng, SENTENCE_FRAMES[register])
    if x.endswith("?") and "?" in frame:
        frame = "{x}"
    return frame.format(x=x[:1].lower() + x[1:] if register == "casual" else x, X=_end(_cap(x)))


def request(rng: random.Random, persona: Persona, register: str, task: Task, all_at_once: bool) -> list[Segment]:
    """The segments of a turn that opens a task: greeting, context, the request, maybe a stated preference."""
    segments: list[Segment] = []
    if rng.random() < 0.25:
        segments.append(Segment("greeting", pick(rng, GREETINGS[register])))
    chatty = 0.55 if persona.detail == "detailed" else 0.2
    if rng.random() < chatty:
        segments.append(Segment("context", pick(rng, FAMILY_CONTEXT[task.family])))
    if persona.expertise != "intermediate" and rng.random() < 0.3:
        segments.append(Segment("context", pick(rng, EXPERTISE_CONTEXT[persona.expertise])))
    noun = task.family in ("code", "writing")
    if all_at_once:
        content = task.full_request
        text = content if rng.random() < 0.4 or noun else _frame(rng, register, task, content, False)
    else:
        text = _frame(rng, register, task, task.shards[0].text, noun)
    rng.shuffle(segments)  # context before or after the greeting
    segments.append(Segment("request", text))
    if rng.random() < 0.2:
        axis = pick(rng, ("detail", "structure", "tone"))
        stated = pick(rng, STATED_PREFERENCES[(axis, getattr(persona, axis))])
        segments.append(Segment("preference", _end(_cap(stated)) if register == "formal" else stated))
    if rng.random() < persona.politeness * 0.3:
        segments.append(Segment("politeness", "Thanks in advance." if register == "formal" else pick(rng, ("pls", "thx", "ty"))))
    return segments


def stated_preference(segments: list[Segment]) -> tuple[str, str] | None:
    for segment in segments:
        if segment.kind == "preference":
            said = segment.text.rstrip(".").lower()
            for (axis, value), texts in STATED_PREFERENCES.items():
                if said in texts:
                    return axis, value
    return None


def continuation(rng: random.Random, register: str, shard: Shard) -> list[Segment]:
    return [Segment("request", pick(rng, CONTINUATIONS[register]).format(x=shard.text))]


def clarification_answer(rng: random.Random, register: str, shard: Shard) -> list[Segment]:
    return [Segment("request", pick(rng, CLARIFICATION_ANSWERS[register]).format(x=shard.text, X=_cap(shard.text)))]


def style_feedback(rng: random.Random, register: str, reason: str) -> tuple[list[Segment], str]:
    feedback_type, formal, casual = FEEDBACK[reason]
    return [Segment("feedback", pick(rng, formal if register == "formal" else casual))], feedback_type


def wrong_answer_feedback(rng: random.Random, register: str, correction: str | None) -> tuple[list[Segment], str]:
    if correction:
        return ([Segment("feedback", pick(rng, WRONG_WITH_CORRECTION[register]).format(c=correction))],
                "make_aware_with_correction")
    return [Segment("feedback", pick(rng, WRONG_WITHOUT_CORRECTION[register]))], "make_aware_without_correction"


def rephrase(rng: random.Random, register: str, task: Task) -> list[Segment]:
    x = task.full_request.rstrip(".")
    return [Segment("feedback", pick(rng, REPHRASE[register]).format(x=x[:1].lower() + x[1:], X=_end(x)))]


def thanks(rng: random.Random, register: str) -> Segment:
    return Segment("acknowledgement", pick(rng, THANKS[register]))


def extend(rng: random.Random, register: str, topic: str) -> list[Segment]:
    return [Segment("request", pick(rng, EXTEND[register]).format(t=topic))]


def prefix(rng: random.Random, register: str, variation: bool) -> str:
    return pick(rng, (VARIATION if variation else NEXT_REQUEST)[register])


def _typo(rng: random.Random, word: str) -> str:
    i = int(rng.random() * (len(word) - 1))
    kind = rng.random()
    if kind < 0.4:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]   # swap neighbours
    if kind < 0.7:
        return word[:i] + word[i + 1:]                         # drop a letter
    return word[:i] + word[i] + word[i:]                       # double a letter


def noisy(rng: random.Random, persona: Persona, text: str) -> str:
    """The user's own noise: typos at their rate (words of 4+ letters) and lower case if they write so."""
    if persona.typo_rate:
        words = text.split(" ")
        for i, word in enumerate(words):
            if len(word) >= 4 and word.isalpha() and rng.random() < persona.typo_rate:
                words[i] = _typo(rng, word)
        text = " ".join(words)
    return text.lower() if persona.lowercase else text


def join(rng: random.Random, persona: Persona, segments: list[Segment]) -> tuple[str, list[Segment]]:
    """Apply the user's noise per segment and join them into the turn's text."""
    noised = [Segment(s.kind, noisy(rng, persona, s.text)) for s in segments if s.text]
    return " ".join(s.text for s in noised), noised
