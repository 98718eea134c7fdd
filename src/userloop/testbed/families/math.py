"""Arithmetic word problems from everyday life, with a computed answer.

Eight schemas (shopping total, budget left, split bill, savings goal, distance, scaling, discount,
pay), themed on the user's domain. Shard 1 states the goal without numbers; the other shards carry
the facts, so a gradual user reveals the problem as Lost-in-Conversation's sharded GSM8K does.
"""

from __future__ import annotations

import random

from userloop.testbed.families import Answer, Shard, Task, pick

DOMAINS = ("cooking", "travel", "fitness", "finance", "gardening", "music", "books", "career", "science",
           "history", "movies", "programming")

# domain -> (plural item, low price, high price), and occasions for the goal shard.
ITEMS = {
    "cooking": [("bags of flour", 2, 6), ("cartons of eggs", 3, 6), ("blocks of cheese", 4, 9), ("jars of honey", 5, 12),
                ("bottles of olive oil", 7, 15), ("packs of butter", 2, 5), ("bags of rice", 3, 8)],
    "travel": [("train tickets", 20, 60), ("museum passes", 10, 30), ("nights at a hostel", 25, 50),
               ("bus passes", 5, 15), ("city tours", 30, 80), ("ferry tickets", 12, 40)],
    "fitness": [("gym sessions", 8, 20), ("protein bars", 2, 4), ("yoga classes", 10, 25), ("resistance bands", 6, 15),
                ("water bottles", 5, 12), ("swim passes", 4, 9)],
    "finance": [("shares of an index fund", 20, 90), ("budget planners", 8, 20), ("monthly app subscriptions", 3, 12),
                ("savings bonds", 25, 100), ("calculator apps", 2, 6)],
    "gardening": [("seed packets", 2, 5), ("bags of compost", 6, 14), ("tomato plants", 3, 7), ("clay pots", 4, 12),
                  ("rose bushes", 9, 25), ("watering cans", 8, 18)],
    "music": [("guitar lessons", 20, 45), ("sets of strings", 6, 15), ("concert tickets", 25, 90), ("vinyl records", 15, 35),
              ("drum sticks", 5, 12), ("sheet music books", 8, 20)],
    "books": [("paperbacks", 7, 15), ("hardcovers", 18, 35), ("comic books", 3, 8), ("audiobook credits", 10, 16),
              ("bookmarks", 1, 4), ("notebooks", 3, 9)],
    "career": [("online courses", 20, 80), ("business cards", 1, 3), ("interview coaching sessions", 30, 70),
               ("printed resumes", 1, 2), ("conference tickets", 50, 150)],
    "science": [("test tubes", 1, 4), ("microscope slides", 2, 5), ("chemistry kits", 20, 45), ("magnifying glasses", 5, 12),
                ("lab notebooks", 4, 9)],
    "history": [("museum tickets", 8, 20), ("history books", 12, 30), ("old maps", 15, 40), ("castle tours", 10, 25),
                ("documentary rentals", 3, 6)],
    "movies": [("movie tickets", 9, 16), ("boxes of popcorn", 4, 8), ("streaming rentals", 3, 6), ("film posters", 10, 25),
               ("blu-ray discs", 12, 25)],
    "programming": [("laptop stands", 20, 45), ("mechanical keyboards", 60, 150), ("cloud server months", 5, 20),
                    ("programming books", 25, 50), ("USB cables", 4, 10)],
}
OCCASIONS = {
    "cooking": ["a dinner party", "this week's baking", "a family lunch", "a cooking class I'm running"],
    "travel": ["my weekend trip", "a trip with friends", "our holiday", "a school trip I'm organising"],
    "fitness": ["my training plan", "a fitness challenge", "my workouts this month", "our running club"],
    "finance": ["my monthly budget", "my savings plan", "some household spending", "my side business"],
    "gardening": ["my vegetable garden", "a balcony garden", "the community garden", "my spring planting"],
    "music": ["my band", "my music lessons", "a concert night", "my record collection"],
    "books": ["our book club", "my reading list", "a gift for my niece", "the classroom library"],
    "career": ["my job search", "a training budget at work", "a work event", "my professional development"],
    "science": ["a science fair project", "my lab class", "a school experiment", "my kid's science kit"],
    "history": ["a history field trip", "my trip to some historic sites", "a museum day", "a history club outing"],
    "movies": ["a movie night", "my film club", "a cinema outing", "a birthday movie marathon"],
    "programming": ["my home office setup", "our dev team", "a hackathon", "my side project"],
}
MODES = [("drive", 40, 90), ("cycle", 12, 25), ("walk", 4, 6), ("take the train", 60, 120)]
PURPOSES = {
    "total": ["work out the total cost of a purchase", "figure out how much a shopping trip will cost",
              "get help adding up the cost of some items"],
    "left": ["figure out how much money will be left after some purchases", "check what remains of a budget after shopping"],
    "split": ["split a shared bill fairly among friends", "work out each person's share of a group expense"],
    "savings": ["plan how long it will take to save up for something", "work out a savings timeline"],
    "distance": ["calculate how far a journey covers", "work out the total distance of a trip"],
    "scale": ["scale up quantities for more people", "adjust amounts in a plan for a different group size"],
    "discount": ["work out a discounted price", "calculate what a purchase costs after a discount"],
    "pay": ["calculate earnings from hourly work", "work out how much a week of work pays"],
}


def _items(rng: random.Random, domain: str, k: int) -> list[tuple[str, int, int]]:
    chosen = rng.sample(ITEMS[domain], k)
    return [(name, rng.randint(2, 9), rng.randint(lo, hi)) for name, lo, hi in chosen]


def _purchase_facts(rng: random.Random, items) -> tuple[list[Shard], list[tuple[str, int]]]:
    facts, steps = [], []
    for i, (name, count, price) in enumerate(items):
        lead = "I'm buying" if i == 0 else pick(rng, ("I also need", "plus", "and", "also"))
        facts.append(Shard(f"{lead} {count} {name} at ${price} each", f"how many {name} you need and what each costs"))
        steps.append((f"{count} {name} at ${price} each cost {count} x {price} = ${count * price}", count * price))
    return facts, steps


def _hours(n: int) -> str:
    return "1 hour" if n == 1 else f"{n} hours"


def make_task(rng: random.Random, domain: str, expert: bool) -> Task:
    schema = pick(rng, list(PURPOSES))
    occasion = pick(rng, OCCASIONS[domain])
    data: dict = {"schema": schema}
    if schema in ("total", "left", "split", "discount"):
        items = _items(rng, domain, 1 if schema == "discount" else rng.randint(2, 3))
    if schema == "total":
        facts, steps = _purchase_facts(rng, items)
        fee = rng.choice([0, 0, rng.randint(3, 12)])
        if fee:
            facts.append(Shard(f"there's a ${fee} delivery fee on top", "whether there are any extra fees"))
            steps.append((f"the delivery fee adds ${fee}", fee))
        answer = sum(v for _, v in steps)
        goal = f"how much I'll spend in total for {occasion}"
        statement = "How much will I spend in total?"
    elif schema == "left":
        facts, steps = _purchase_facts(rng, items)
        spent = sum(v for _, v in steps)
        budget = spent + rng.randint(5, 60)
        facts.insert(0, Shard(f"I have ${budget} to spend", "how much money you have to spend"))
        steps.append((f"${budget} minus the ${spent} spent leaves ${budget - spent}", -spent))
        answer = budget - spent
        goal = f"how much money I'll have left after shopping for {occasion}"
        statement = "How much money will I have left?"
    elif schema == "split":
        facts, steps = _purchase_facts(rng, items)
        total = sum(v for _, v in steps)
        people = rng.randint(2, 6)
        extra = (-total) % people  # a tip that makes the share whole
        if extra:
            facts.append(Shard(f"we're adding a ${extra} tip", "whether a tip or fee is added"))
            steps.append((f"adding the ${extra} tip gives ${total + extra}", extra))
        facts.append(Shard(f"we're splitting it equally between {people} people", "how many people are splitting it"))
        answer = (total + extra) // people
        steps.append((f"${total + extra} divided by {people} people is ${answer} each", 0))
        goal = f"how much each person pays for {occasion}"
        statement = "How much does each person pay?"
    elif schema == "savings":
        weekly = rng.randint(2, 12) * 5
        have = rng.randint(0, 8) * 10
        weeks = rng.randint(3, 20)
        target = have + weekly * weeks - rng.randint(0, weekly - 1)
        facts = [Shard(f"I want to save ${target} for {occasion}", "how much you want to save in total"),
                 Shard(f"I already have ${have} saved" if have else "I'm starting from zero", "how much you have saved already"),
                 Shard(f"I can put aside ${weekly} a week", "how much you can save each week")]
        answer = -(-(target - have) // weekly)
        steps = [(f"you still need ${target} - ${have} = ${target - have}", 0),
                 (f"at ${weekly} a week that takes {target - have} / {weekly}, rounded up to {answer} weeks", 0)]
        goal = f"how many weeks it will take me to save up for {occasion}"
        statement = "How many weeks will it take?"
    elif schema == "distance":
        (verb, lo, hi), (verb2, lo2, hi2) = rng.sample(MODES, 2)
        v, t, u, r = rng.randint(lo, hi), rng.randint(1, 4), rng.randint(lo2, hi2), rng.randint(1, 3)
        facts = [Shard(f"first I {verb} at {v} km/h for {_hours(t)}", "how fast you travel in the first part and for how long"),
                 Shard(f"then I {verb2} at {u} km/h for {_hours(r)}", "the speed and time of the second part")]
        steps = [(f"the first part covers {v} x {t} = {v * t} km", v * t), (f"the second part covers {u} x {r} = {u * r} km", u * r)]
        answer = v * t + u * r
        goal = f"how far I'll travel in total for {occasion}"
        statement = "How many kilometres do I travel in total?"
    elif schema == "scale":
        name, _, _ = pick(rng, ITEMS[domain])
        base_people = rng.choice([2, 4, 5, 6])
        per_person = rng.randint(1, 4)
        amount = base_people * per_person
        people = base_people * rng.randint(2, 5)
        facts = [Shard(f"the plan for {base_people} people needs {amount} {name}", "what the original plan needs and for how many people"),
                 Shard(f"I need it for {people} people instead", "how many people you are planning for")]
        answer = amount * people // base_people
        steps = [(f"{amount} {name} for {base_people} people is {per_person} per person", 0),
                 (f"for {people} people that is {per_person} x {people} = {answer}", 0)]
        goal = f"how many {name} I need for {occasion}"
        statement = f"How many {name} do I need?"
    elif schema == "discount":
        name, _, _ = items[0]
        discount = rng.choice([10, 20, 25, 50])
        price = rng.randint(2, 20) * 4 * (5 if discount == 10 else 1)
        count = rng.randint(1, 6)
        cut = price * discount // 100
        facts = [Shard(f"I want {count} {name} that normally cost ${price} each", "how many you want and the normal price"),
                 Shard(f"they're {discount}% off this week", "how big the discount is")]
        answer = count * (price - cut)
        steps = [(f"{discount}% of ${price} is ${cut}, so each costs ${price - cut}", 0),
                 (f"{count} x ${price - cut} = ${answer}", 0)]
        goal = f"what I'll pay for some {name} on sale for {occasion}"
        statement = "How much will I pay?"
    else:  # pay
        wage, hours, days = rng.randint(12, 40), rng.randint(3, 9), rng.randint(2, 6)
        cost = rng.choice([0, rng.randint(5, 40)])
        facts = [Shard(f"I earn ${wage} an hour", "your hourly rate"),
                 Shard(f"I work {hours} hours a day for {days} days this week", "how many hours and days you work")]
        steps = [(f"{hours} hours x {days} days = {hours * days} hours", 0),
                 (f"{hours * days} hours x ${wage} = ${wage * hours * days}", wage * hours * days)]
        if cost:
            facts.append(Shard(f"but I spend ${cost} on transport", "whether you have any costs to subtract"))
            steps.append((f"minus ${cost} for transport", -cost))
        answer = wage * hours * days - cost
        goal = "how much I'll actually earn this week"
        statement = "How much do I earn this week?"
    data["steps"] = [text for text, _ in steps]
    problem = ", ".join(f.text for f in facts) + ". " + statement
    shards = [Shard(f"I need to work out {goal}")] + facts
    purpose = pick(rng, PURPOSES[schema]) + ("" if schema == "pay" else f" for {occasion}")
    return Task("math", domain, purpose, shards, problem[0].upper() + problem[1:], {"answer": answer},
                topic="how to check a calculation like this", data=data)


def answer(rng: random.Random, task: Task, revealed: int, correct: bool, technical: bool) -> Answer:
    """Worked steps and a final number. A wrong answer slips in one step (and says so in its
    correction); an answer from partial facts computes only what was given."""
    steps = list(task.data["steps"])
    true_answer = task.check["answer"]
    if revealed < len(task.shards):
        known = max(1, revealed - 1)
        guess = true_answer - rng.randint(1, max(2, abs(true_answer) // 3 or 2))
        points = ["From what you have told me so far, " + steps[0]] + steps[1:known]
        return Answer(lead="Here is a first estimate with the information so far.",
                      points=points + [f"so my estimate is {guess}, but I may be missing some details"],
                      correct=False, result=guess)
    result = true_answer
    correction = None
    if not correct:
        slip = pick(rng, [-10, -5, -2, -1, 1, 2, 3, 5, 10])
        result = true_answer + slip
        correction = f"the answer should be {true_answer}, not {result}"
    verb = "compute" if technical else "work out"
    lead = f"Let us {verb} it step by step."
    final = f"So the answer is {result}."
    return Answer(lead=lead, points=steps + [final], correct=result == true_answer, correction=correction, result=result)
