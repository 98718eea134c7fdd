"""Recommendations from built-in catalogues; the check is that every item has the tag the user asked for.

A wrong answer slips in one item without the tag.
"""

from __future__ import annotations

import random

from userloop.testbed.families import Answer, Shard, Task, pick

# domain -> (what is recommended, {tag: how the user asks for it}, items (name, blurb, tags))
CATALOGUES = {
    "cooking": ("recipes", {"quick": "something that takes under 30 minutes", "vegetarian": "no meat please",
                            "budget": "cheap ingredients only"},
                (("shakshuka", "eggs poached in a spiced tomato sauce", {"quick", "vegetarian", "budget"}),
                 ("beef stew", "a slow, hearty one-pot dish", set()),
                 ("pasta aglio e olio", "garlic, olive oil and chilli on spaghetti", {"quick", "vegetarian", "budget"}),
                 ("chicken stir-fry", "vegetables and chicken in a hot wok", {"quick"}),
                 ("lentil soup", "a filling soup from pantry staples", {"vegetarian", "budget"}),
                 ("mushroom risotto", "creamy rice stirred slowly with stock", {"vegetarian"}),
                 ("fried rice", "a good way to use leftover rice", {"quick", "budget"}),
                 ("roast lamb", "a Sunday roast with rosemary", set()),
                 ("caprese salad", "tomato, mozzarella and basil", {"quick", "vegetarian"}),
                 ("bean chili", "a smoky chili made with three kinds of beans", {"vegetarian", "budget"}))),
    "travel": ("destinations", {"budget": "somewhere affordable", "beach": "somewhere with beaches", "europe": "in Europe"},
               (("Lisbon", "hilly streets, trams and pastries", {"budget", "beach", "europe"}),
                ("Reykjavik", "a base for glaciers and hot springs", {"europe"}),
                ("Da Nang", "long beaches and cheap street food", {"budget", "beach"}),
                ("Kyoto", "temples, gardens and tea houses", set()),
                ("Krakow", "a medieval old town at low prices", {"budget", "europe"}),
                ("Crete", "mountains, ruins and beaches", {"beach", "europe"}),
                ("Oaxaca", "markets and some of the best food in Mexico", {"budget"}),
                ("Zurich", "a lake city with alpine views", {"europe"}),
                ("Goa", "relaxed beaches and old churches", {"budget", "beach"}))),
    "fitness": ("workouts", {"beginner": "I'm a beginner", "home": "something I can do at home", "short": "under 20 minutes"},
                (("brisk walking", "easy on the joints and free", {"beginner"}),
                 ("bodyweight circuit", "squats, push-ups and lunges in rounds", {"home", "short"}),
                 ("yoga flow", "stretching and balance on a mat", {"beginner", "home"}),
                 ("interval sprints", "short bursts of running with rests", {"short"}),
                 ("swimming laps", "full-body exercise in the pool", set()),
                 ("jump rope", "cheap and very efficient", {"home", "short"}),
                 ("beginner strength class", "guided lifting with a coach", {"beginner"}),
                 ("stair climbing", "a quick cardio burst", {"home", "short"}))),
    "books": ("books", {"short": "something short", "classic": "a classic", "mystery": "a mystery"},
              (("The Old Man and the Sea", "a short classic about an old fisherman", {"short", "classic"}),
               ("The Hound of the Baskervilles", "Sherlock Holmes on the moors", {"classic", "mystery"}),
               ("Gone Girl", "a twisting modern thriller", {"mystery"}),
               ("Of Mice and Men", "a brief, moving story of friendship", {"short", "classic"}),
               ("And Then There Were None", "ten strangers on an island", {"classic", "mystery"}),
               ("The Martian", "a stranded astronaut and a lot of science", set()),
               ("Animal Farm", "a short political fable", {"short", "classic"}),
               ("The Thursday Murder Club", "retirees solving crimes", {"mystery"}),
               ("Sapiens", "a popular history of humankind", set()))),
    "movies": ("films", {"family": "something family friendly", "comedy": "a comedy", "short": "under two hours"},
               (("Paddington 2", "a warm-hearted bear in London", {"family", "comedy", "short"}),
                ("The Grand Budapest Hotel", "a stylish caper in a mountain hotel", {"comedy", "short"}),
                ("Interstellar", "a long space epic", set()),
                ("Spirited Away", "a girl trapped in a world of spirits", {"family"}),
                ("Toy Story", "toys that come alive", {"family", "comedy", "short"}),
                ("The Godfather", "a crime family saga", set()),
                ("Groundhog Day", "one day, over and over", {"comedy", "short"}),
                ("Up", "a flying house and an unlikely friendship", {"family", "short"}))),
    "music": ("albums", {"jazz": "some jazz", "calm": "something calm", "classic": "a classic album"},
              (("Kind of Blue", "Miles Davis at his most relaxed", {"jazz", "calm", "classic"}),
               ("Abbey Road", "the Beatles' late masterpiece", {"classic"}),
               ("Blue Train", "John Coltrane's hard bop classic", {"jazz", "classic"}),
               ("Music for Airports", "Brian Eno's ambient landmark", {"calm"}),
               ("Back in Black", "loud and proud rock", {"classic"}),
               ("Waltz for Debby", "the Bill Evans Trio live", {"jazz", "calm"}),
               ("Random Access Memories", "polished modern disco", set()),
               ("Pink Moon", "Nick Drake alone with a guitar", {"calm"}))),
    "gardening": ("plants", {"shade": "something that grows in shade", "easy": "something hard to kill", "edible": "something I can eat"},
                  (("hostas", "big leaves that love shade", {"shade", "easy"}),
                   ("mint", "grows almost anywhere, keep it in a pot", {"easy", "edible", "shade"}),
                   ("tomatoes", "need sun but reward you all summer", {"edible"}),
                   ("ferns", "lush green for dark corners", {"shade"}),
                   ("lavender", "fragrant and drought tolerant", {"easy"}),
                   ("lettuce", "fast and easy salad leaves", {"easy", "edible"}),
                   ("orchids", "beautiful but fussy", set()),
                   ("chives", "a herb that comes back every year", {"easy", "edible"}))),
    "programming": ("projects", {"beginner": "for a beginner", "python": "in Python", "weekend": "doable in a weekend"},
                    (("a to-do list app", "a classic first project", {"beginner", "weekend"}),
                     ("a web scraper", "collects data from web pages", {"python", "weekend"}),
                     ("a compiler for a tiny language", "a deep dive into parsing", set()),
                     ("a number guessing game", "loops, input and random numbers", {"beginner", "python", "weekend"}),
                     ("a chat server", "sockets and concurrency", set()),
                     ("a budget tracker", "files and simple maths", {"beginner", "python"}),
                     ("a Discord bot", "fun and quick to show friends", {"python", "weekend"}),
                     ("an operating system kernel", "a very long project", set()))),
}
DOMAINS = tuple(CATALOGUES)
ASKS = ("can you recommend some {what}?", "what {what} would you suggest?", "I'm looking for {what} to try.",
        "suggest a few {what}.", "any good {what} you'd recommend?", "give me some ideas for {what}.",
        "what are some good {what}?", "I need some new {what}.")
PURPOSES = ("get some recommendations", "find something new to try", "get suggestions tailored to a preference",
            "ask for a few recommendations")


def make_task(rng: random.Random, domain: str, expert: bool) -> Task:
    domain = domain if domain in CATALOGUES else pick(rng, DOMAINS)
    what, tags, items = CATALOGUES[domain]
    tag = pick(rng, sorted(tags))
    ask = pick(rng, ASKS).format(what=what)
    shards = [Shard(ask), Shard(tags[tag], "any preferences I should know about")]
    full = f"{ask[0].upper() + ask[1:]} {tags[tag][0].upper() + tags[tag][1:]}."
    matching = [name for name, _, item_tags in items if tag in item_tags]
    return Task("recommendation", domain, f"{pick(rng, PURPOSES)} for {what}", shards, full, {"tag": tag, "matching": matching},
                topic=what, data={"tag": tag})


def answer(rng: random.Random, task: Task, revealed: int, correct: bool, technical: bool) -> Answer:
    what, tags, items = CATALOGUES[task.domain]
    tag = task.data["tag"]
    good = [item for item in items if tag in item[2]]
    bad = [item for item in items if tag not in item[2]]
    if revealed < 2:  # the preference is not known yet: any three
        chosen = rng.sample(items, 3)
    elif correct:
        chosen = rng.sample(good, min(3, len(good)))
    else:
        chosen = rng.sample(good, min(2, len(good))) + [pick(rng, bad)]
        rng.shuffle(chosen)
    misfit = next((name for name, _, item_tags in chosen if tag not in item_tags), None)
    points = [f"{name[:1].upper() + name[1:]}: {blurb}." for name, blurb, _ in chosen]
    return Answer(lead=f"Here are a few {what} you might like.", points=points, correct=misfit is None,
                  correction=f"{misfit} isn't what I asked for, I said {tags[tag]}" if misfit and revealed >= 2 else None,
                  result=[name for name, _, _ in chosen])
