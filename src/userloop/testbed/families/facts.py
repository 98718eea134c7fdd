"""Factual questions answered from a built-in table; the check is the table's answer.

A wrong answer names another entry's answer for the same relation (a plausible confusion).
"""

from __future__ import annotations

import random

from userloop.testbed.families import Answer, Shard, Task, pick

# relation -> (domain, question forms, answer sentence, rows of (subject, answer))
RELATIONS = {
    "capital": ("travel", ("what is the capital of {s}", "what's the capital city of {s}", "which city is the capital of {s}",
                           "capital of {s}?", "what city is {s}'s capital"), "The capital of {s} is {a}.",
                (("France", "Paris"), ("Japan", "Tokyo"), ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Brazil", "Brasilia"),
                 ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Peru", "Lima"), ("Norway", "Oslo"), ("Turkey", "Ankara"),
                 ("Argentina", "Buenos Aires"), ("Vietnam", "Hanoi"), ("Morocco", "Rabat"), ("New Zealand", "Wellington"),
                 ("Switzerland", "Bern"), ("Portugal", "Lisbon"), ("Thailand", "Bangkok"), ("South Korea", "Seoul"),
                 ("Chile", "Santiago"), ("Poland", "Warsaw"), ("India", "New Delhi"), ("Nigeria", "Abuja"),
                 ("Iceland", "Reykjavik"), ("Ireland", "Dublin"), ("Greece", "Athens"))),
    "currency": ("finance", ("what currency does {s} use", "what's the currency of {s}", "which currency is used in {s}",
                             "what money do they use in {s}"), "{s} uses the {a}.",
                 (("Japan", "yen"), ("the United Kingdom", "pound sterling"), ("India", "rupee"), ("Switzerland", "Swiss franc"),
                  ("Mexico", "peso"), ("South Korea", "won"), ("Brazil", "real"), ("South Africa", "rand"), ("Poland", "zloty"),
                  ("Sweden", "krona"), ("Thailand", "baht"), ("Vietnam", "dong"), ("Turkey", "lira"))),
    "symbol": ("science", ("what is the chemical symbol for {s}", "what's the symbol of {s} on the periodic table",
                           "which symbol stands for {s}", "chemical symbol of {s}?"), "The chemical symbol for {s} is {a}.",
               (("gold", "Au"), ("silver", "Ag"), ("iron", "Fe"), ("sodium", "Na"), ("potassium", "K"), ("lead", "Pb"),
                ("tin", "Sn"), ("copper", "Cu"), ("mercury", "Hg"), ("tungsten", "W"), ("helium", "He"), ("calcium", "Ca"))),
    "author": ("books", ("who wrote {s}", "who is the author of {s}", "who was {s} written by", "author of {s}?"),
               "{s} was written by {a}.",
               (("Pride and Prejudice", "Jane Austen"), ("1984", "George Orwell"), ("Moby-Dick", "Herman Melville"),
                ("War and Peace", "Leo Tolstoy"), ("The Great Gatsby", "F. Scott Fitzgerald"), ("To Kill a Mockingbird", "Harper Lee"),
                ("Don Quixote", "Miguel de Cervantes"), ("Frankenstein", "Mary Shelley"), ("Crime and Punishment", "Fyodor Dostoevsky"),
                ("Jane Eyre", "Charlotte Bronte"), ("The Hobbit", "J. R. R. Tolkien"), ("Beloved", "Toni Morrison"))),
    "year": ("history", ("in what year did {s}", "what year did {s}", "when did {s}", "which year did {s}"), "That was in {a}.",
             (("the first moon landing happen", "1969"), ("the Berlin Wall fall", "1989"), ("the Magna Carta get signed", "1215"),
              ("World War I start", "1914"), ("World War II end", "1945"), ("the French Revolution begin", "1789"),
              ("the Titanic sink", "1912"), ("the Battle of Hastings take place", "1066"),
              ("the Wright brothers make their first powered flight", "1903"), ("Columbus first reach the Americas", "1492"))),
    "composer": ("music", ("who composed {s}", "who wrote the music for {s}", "which composer wrote {s}", "composer of {s}?"),
                 "{s} was composed by {a}.",
                 (("The Four Seasons", "Antonio Vivaldi"), ("Swan Lake", "Pyotr Tchaikovsky"), ("The Magic Flute", "Wolfgang Amadeus Mozart"),
                  ("the Brandenburg Concertos", "Johann Sebastian Bach"), ("Clair de Lune", "Claude Debussy"), ("Bolero", "Maurice Ravel"),
                  ("The Planets", "Gustav Holst"), ("the Moonlight Sonata", "Ludwig van Beethoven"))),
    "director": ("movies", ("who directed {s}", "who was the director of {s}", "which director made {s}", "director of {s}?"),
                 "{s} was directed by {a}.",
                 (("Jaws", "Steven Spielberg"), ("Psycho", "Alfred Hitchcock"), ("The Godfather", "Francis Ford Coppola"),
                  ("Spirited Away", "Hayao Miyazaki"), ("Pulp Fiction", "Quentin Tarantino"), ("Parasite", "Bong Joon-ho"),
                  ("Seven Samurai", "Akira Kurosawa"), ("Inception", "Christopher Nolan"), ("2001: A Space Odyssey", "Stanley Kubrick"))),
    "dish": ("cooking", ("which country does {s} come from", "where is {s} originally from", "what country is {s} from",
                         "origin of {s}?"), "{S} comes from {a}.",
             (("paella", "Spain"), ("kimchi", "Korea"), ("pierogi", "Poland"), ("ceviche", "Peru"), ("goulash", "Hungary"),
              ("pho", "Vietnam"), ("poutine", "Canada"), ("moussaka", "Greece"), ("tagine", "Morocco"), ("fondue", "Switzerland"))),
    "acronym": ("programming", ("what does {s} stand for", "what is {s} short for", "meaning of the acronym {s}?",
                                "what's {s} an abbreviation of"), "{s} stands for {a}.",
                (("HTML", "HyperText Markup Language"), ("JSON", "JavaScript Object Notation"), ("SQL", "Structured Query Language"),
                 ("CSS", "Cascading Style Sheets"), ("API", "Application Programming Interface"), ("CPU", "Central Processing Unit"),
                 ("RAM", "Random Access Memory"), ("URL", "Uniform Resource Locator"))),
    "workplace": ("career", ("what does {s} stand for", "what is {s} short for at work", "what's the full form of {s}"),
                  "{s} stands for {a}.",
                  (("CV", "curriculum vitae"), ("KPI", "key performance indicator"), ("HR", "human resources"),
                   ("MBA", "Master of Business Administration"), ("ROI", "return on investment"), ("CEO", "chief executive officer"))),
    "sport": ("fitness", ("how many players does a {s} team have on the field", "how many players are on a {s} team during play",
                          "number of players in a {s} team?"), "A {s} team has {a} players on the field.",
              (("soccer", "11"), ("basketball", "5"), ("volleyball", "6"), ("rugby union", "15"), ("baseball", "9"), ("ice hockey", "6"))),
    "plant": ("gardening", ("which plant family does {s} belong to", "what family is {s} in", "plant family of {s}?"),
              "{S} belongs to the {a} family.",
              (("the tomato", "nightshade"), ("the sunflower", "daisy"), ("the rose", "rose"), ("basil", "mint"),
               ("the potato", "nightshade"), ("the carrot", "carrot"), ("the pumpkin", "gourd"))),
}
CONTEXT_FACTS = {
    "travel": ("Capitals are usually, but not always, the largest city of a country.", "Many capitals host the national parliament."),
    "finance": ("Exchange rates between currencies change every day.", "Most currencies are divided into 100 smaller units."),
    "science": ("Many chemical symbols come from the element's Latin name.", "The periodic table orders elements by atomic number."),
    "books": ("Many classic novels are now in the public domain.", "Several of these books have been adapted into films."),
    "history": ("Historians date events from written records of the time.", "The exact date can differ between calendars."),
    "music": ("Classical pieces are often catalogued with opus numbers.", "Many composers wrote for a patron or a court."),
    "movies": ("Directors often work with the same crew across films.", "Film credits list the director before the writers."),
    "cooking": ("Regional versions of a dish can differ a lot.", "Many national dishes started as everyday home cooking."),
    "programming": ("Acronyms are common in computing documentation.", "Standards bodies define most of these terms."),
    "career": ("These abbreviations appear in job adverts all the time.", "The exact meaning can vary a little between companies."),
    "fitness": ("Substitutes do not count towards the players on the field.", "Youth leagues sometimes play with fewer players."),
    "gardening": ("Plants in the same family often share pests and diseases.", "Crop rotation usually moves a family to a new bed each year."),
}
ABOUT = {"capital": "a country's capital city", "currency": "the currency of a country", "symbol": "a chemical element's symbol",
         "author": "who wrote a famous book", "year": "when a historical event happened", "composer": "who composed a piece of music",
         "director": "who directed a film", "dish": "where a dish comes from", "acronym": "what a computing acronym stands for",
         "workplace": "what a workplace abbreviation means", "sport": "how many players a sports team has",
         "plant": "which family a plant belongs to"}
DOMAINS = tuple(sorted({domain for domain, *_ in RELATIONS.values()}))
PURPOSES = ("check a quick fact", "get the answer to a general knowledge question", "settle a factual question",
            "look up a piece of trivia")


def make_task(rng: random.Random, domain: str, expert: bool) -> Task:
    relations = [name for name, (d, *_rest) in RELATIONS.items() if d == domain] or list(RELATIONS)
    relation = pick(rng, relations)
    domain, forms, _, rows = RELATIONS[relation]
    index = int(rng.random() * len(rows))
    subject, true_answer = rows[index]
    question = pick(rng, forms).format(s=subject)
    question = question if question.endswith("?") else question + "?"
    check = {"answer": true_answer, "relation": relation, "subject": subject}
    return Task("fact", domain, f"{pick(rng, PURPOSES)} about {ABOUT[relation]}", [Shard(question)], question[0].upper() + question[1:], check,
                topic=subject, data={"relation": relation, "index": index})


def answer(rng: random.Random, task: Task, revealed: int, correct: bool, technical: bool) -> Answer:
    domain, _, sentence, rows = RELATIONS[task.data["relation"]]
    subject, true_answer = rows[task.data["index"]]
    given = true_answer
    if not correct:
        given = pick(rng, [a for _, a in rows if a != true_answer])
    text = sentence.format(s=subject, S=subject[:1].upper() + subject[1:], a=given)
    return Answer(lead=text, points=list(CONTEXT_FACTS[domain]), correct=given == true_answer,
                  correction=None if given == true_answer else f"it's {true_answer}, not {given}", result=given)
