"""Writing requests (emails, letters, poems, posts, toasts, summaries) with checkable constraints.

The check is a word limit and a word that must appear. A wrong answer breaks one of them; an answer
written before the user revealed a constraint ignores it.
"""

from __future__ import annotations

import random

from userloop.testbed.families import Answer, Shard, Task, pick

DOMAINS = ("cooking", "travel", "fitness", "finance", "programming", "science", "history", "music", "movies",
           "books", "gardening", "career")
# domain -> (topic, words one of which the user wants mentioned)
TOPICS = {
    "cooking": [("the opening of a new bakery", ("sourdough", "croissants")), ("a family recipe night", ("lasagna", "dessert")),
                ("a cooking class for beginners", ("knives", "apron"))],
    "travel": [("a weekend trip to Lisbon", ("tram", "pastries")), ("a delayed flight", ("refund", "luggage")),
               ("a hiking holiday in the Alps", ("trail", "cabin"))],
    "fitness": [("starting a running club", ("Saturday", "park")), ("a charity fun run", ("donations", "medal")),
                ("a new yoga routine", ("breathing", "mat"))],
    "finance": [("a late rent payment", ("Friday", "transfer")), ("a budgeting workshop", ("spreadsheet", "savings")),
                ("a shared household budget", ("groceries", "utilities"))],
    "programming": [("a production outage", ("rollback", "database")), ("launching an open source library", ("documentation", "contributors")),
                    ("a code review process", ("tests", "feedback"))],
    "science": [("a science fair project", ("volcano", "poster")), ("a visit to the observatory", ("telescope", "Saturn")),
                ("a lab safety reminder", ("goggles", "gloves"))],
    "history": [("a local history walk", ("castle", "market")), ("a museum exhibition", ("Romans", "coins")),
                ("a family history project", ("letters", "photographs"))],
    "music": [("a band's first concert", ("drums", "encore")), ("piano lessons for adults", ("scales", "practice")),
              ("a vinyl record fair", ("jazz", "collectors"))],
    "movies": [("a neighbourhood movie night", ("popcorn", "projector")), ("a film club meeting", ("subtitles", "director")),
               ("a short film premiere", ("trailer", "cast"))],
    "books": [("a new book club", ("mystery", "snacks")), ("a library fundraiser", ("donations", "shelves")),
              ("an author visit at school", ("questions", "signing"))],
    "gardening": [("a community garden day", ("tomatoes", "compost")), ("a plant swap", ("cuttings", "succulents")),
                  ("a spring planting weekend", ("seeds", "shovels"))],
    "career": [("asking for a day off", ("Monday", "deadline")), ("a job application", ("experience", "interview")),
               ("welcoming a new colleague", ("lunch", "onboarding"))],
}
KINDS = {
    # kind -> (request forms, purpose, opening lines, closing lines)
    "email": (("an email to my {r} about {t}", "a short email for my {r} about {t}", "an email I can send my {r} regarding {t}"),
              "write an email about an everyday matter",
              ("Dear {R},", "Hello {R},", "Hi {R},"), ("Best regards,", "Kind regards,", "Thank you,")),
    "letter": (("a letter to my {r} about {t}", "a formal letter to my {r} concerning {t}"), "draft a letter",
               ("Dear {R},",), ("Yours sincerely,", "With best wishes,")),
    "poem": (("a poem about {t}", "a short poem on {t}", "a few lines of poetry about {t}"), "write a short poem", ("",), ("",)),
    "post": (("a social media post about {t}", "an instagram caption about {t}", "a post for our group chat about {t}"),
             "write a social media post", ("",), ("",)),
    "toast": (("a toast for {t}", "a short speech to give at {t}"), "prepare a short toast or speech", ("",), ("Cheers!", "To all of you!")),
    "summary": (("a summary of this text: {p}", "a short summary of the following: {p}"), "summarise a piece of text", ("",), ("",)),
}
RECIPIENTS = ("landlord", "manager", "coworker", "neighbour", "teacher", "team", "client", "friend")
BODY = (
    "I am writing about {t}.", "I wanted to share a few thoughts on {t}.", "This note is about {t}.",
    "We have been planning {t} for a while now.", "Everyone involved has put real effort into it.",
    "It would mean a lot to have your support.", "Please let me know what works best for you.",
    "I am happy to answer any questions you may have.", "The details are still open, so ideas are welcome.",
    "It has been on my mind for some time.", "I think it could make a real difference.", "We hope to see many familiar faces.",
)
KEYWORD_LINES = ("It will of course include {k}.", "I especially want to mention {k}.", "Do not forget the {k}.",
                 "There will be {k} as well.")
POEM_LINES = (
    "{T} wakes slowly in the morning light,", "a quiet song beneath the open sky,", "the river keeps the time of {t},",
    "and every window holds a little gold.", "we count the hours like falling leaves,", "a small bright room where {t} begins,",
    "the evening folds its hands and waits,", "and someone laughs across the road.", "there is a map drawn in the rain,",
    "and {k} waits quietly by the door.",
)
PARAGRAPH = (
    "Over the past year, {t} has drawn more interest than anyone expected.", "Organisers say the first events filled up within days.",
    "Some people worried about the cost, but most found it affordable.", "Local groups have offered rooms and volunteers.",
    "A survey found that most participants would come again.", "The next step is to find a regular schedule that suits everyone.",
    "Critics argue that the plans are still too vague.", "Supporters point to the friendships it has already created.",
)


def _words(text: str) -> int:
    return len(text.split())


def make_task(rng: random.Random, domain: str, expert: bool) -> Task:
    kind = pick(rng, list(KINDS))
    forms, purpose, _, _ = KINDS[kind]
    topic, keywords = pick(rng, TOPICS[domain])
    keyword = pick(rng, keywords)
    recipient = pick(rng, RECIPIENTS)
    paragraph = " ".join(s.format(t=topic) for s in rng.sample(PARAGRAPH, 5)) if kind == "summary" else ""
    request = pick(rng, forms).format(r=recipient, t=topic, p=paragraph)
    max_words = pick(rng, (30, 40, 50, 60) if kind in ("summary", "post") else (50, 60, 80, 100))
    shards = [Shard(request), Shard(f"keep it under {max_words} words", "how long it should be"),
              Shard(f"mention the {keyword}", "anything it must include")]
    full = f"Write {request} Keep it under {max_words} words and mention the {keyword}." if kind == "summary" else \
        f"Write {request}. Keep it under {max_words} words and mention the {keyword}."
    check = {"kind": kind, "max_words": max_words, "must_include": [keyword]}
    return Task("writing", domain, f"{purpose} about {topic}", shards, full, check, topic=topic,
                data={"kind": kind, "topic": topic, "keyword": keyword, "recipient": recipient, "paragraph": paragraph})


def _piece(rng: random.Random, data: dict, target_words: int, include_keyword: bool) -> str:
    kind, topic, keyword = data["kind"], data["topic"], data["keyword"]
    _, _, openings, closings = KINDS[kind]
    fill = {"t": topic, "T": topic[:1].upper() + topic[1:], "k": keyword, "R": data["recipient"].capitalize()}
    if kind == "poem":
        pool = [line for line in POEM_LINES if "{k}" not in line]
        lines = [line.format(**fill) for line in rng.sample(pool, len(pool))]
        keyword_line = "and the {k} waits quietly by the door.".format(**fill)
        sep = "\n"
    elif kind == "summary":
        sentences = data["paragraph"].split(". ")
        lines = [s.rstrip(".") + "." for s in sentences]
        keyword_line = f"It also notes the {keyword}."
        sep = " "
    else:
        lines = [s.format(**fill) for s in rng.sample(BODY, len(BODY))]
        keyword_line = pick(rng, KEYWORD_LINES).format(**fill)
        sep = " "
    opening, closing = pick(rng, openings).format(**fill), pick(rng, closings)
    budget = target_words - _words(opening) - _words(closing) - (_words(keyword_line) if include_keyword else 0)
    body: list[str] = []
    for line in lines:
        if _words(" ".join(body + [line])) > budget and body:
            break
        body.append(line)
    if include_keyword:
        body.insert(min(len(body), 1 + int(rng.random() * len(body))), keyword_line)
    text = sep.join(body)
    parts = [p for p in (opening, text, closing) if p]
    return "\n\n".join(parts) if kind in ("email", "letter") else "\n".join(parts)


def answer(rng: random.Random, task: Task, revealed: int, correct: bool, technical: bool) -> Answer:
    limit = task.check["max_words"]
    knows_limit, knows_keyword = revealed >= 2, revealed >= 3
    include = knows_keyword
    target = int(limit * 0.8) if knows_limit else int(limit * rng.uniform(1.3, 2.0))
    correction = None
    if correct or not knows_keyword:
        pass
    elif rng.random() < 0.5:
        target = int(limit * rng.uniform(1.4, 2.0))
        correction = f"it's supposed to be under {limit} words"
    else:
        include = False
        correction = f"you didn't mention the {task.data['keyword']}"
    piece = _piece(rng, task.data, target, include)
    # what actually happened decides the correction, not what was intended
    over = _words(piece) >= limit
    missing = task.data["keyword"].lower() not in piece.lower()
    if over and knows_limit:
        correction = f"it's supposed to be under {limit} words"
    elif missing and knows_keyword:
        correction = f"you didn't mention the {task.data['keyword']}"
    elif correction and not (over or missing):
        correction = None
    kind = task.data["kind"]
    note = {"poem": "I kept the imagery simple and concrete.", "summary": "I kept only the main points.",
            "toast": "It is meant to be read aloud in under a minute."}.get(kind, "Feel free to adjust the wording.")
    return Answer(lead=f"Here is a draft of the {kind}.", points=[note], block=piece, correct=not (over or missing),
                  correction=correction,
                  result={"words": _words(piece), "mentions_keyword": not missing})
