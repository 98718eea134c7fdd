"""Small Python functions, each with a reference solution, a plausible bug and unit tests.

Shard 1 says what the function does; later shards give its name and argument, and the edge cases
that the tests check. A wrong answer is the buggy version, which fails at least one test.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from userloop.testbed.families import Answer, Shard, Task, pick

DOMAINS = ("programming",)


@dataclass(frozen=True)
class Function:
    name: str
    arg: str
    asks: tuple[str, ...]         # what it does, several phrasings (after "a function that ...")
    edge: tuple[str, ...]         # requirements revealed later (each is checked by the tests)
    code: str
    bug: str
    bug_note: str                 # what is wrong with the bug, as a user would point it out
    tests: tuple[str, ...]
    topic: str


FUNCTIONS = (
    Function("sum_even", "numbers", ("adds up the even numbers in a list", "returns the sum of the even numbers in a list"),
             ("an empty list should give 0", "negative even numbers count too"),
             "def sum_even(numbers):\n    return sum(n for n in numbers if n % 2 == 0)",
             "def sum_even(numbers):\n    return sum(n for n in numbers if n % 2 == 1)",
             "it adds the odd numbers instead of the even ones",
             ("assert sum_even([1, 2, 3, 4]) == 6", "assert sum_even([]) == 0", "assert sum_even([-2, 3]) == -2"),
             "the modulo operator"),
    Function("count_vowels", "text", ("counts the vowels in a string", "tells me how many vowels a piece of text has"),
             ("upper case vowels count as well", "y is not a vowel here"),
             "def count_vowels(text):\n    return sum(ch in 'aeiou' for ch in text.lower())",
             "def count_vowels(text):\n    return sum(ch in 'aeiou' for ch in text)",
             "it misses capital vowels",
             ("assert count_vowels('hello') == 2", "assert count_vowels('AEIOU') == 5", "assert count_vowels('rhythm') == 0"),
             "looping over the characters of a string"),
    Function("is_palindrome", "text", ("checks whether a word reads the same backwards", "tests if a string is a palindrome"),
             ("it should ignore case", "spaces should be ignored"),
             "def is_palindrome(text):\n    cleaned = text.replace(' ', '').lower()\n    return cleaned == cleaned[::-1]",
             "def is_palindrome(text):\n    return text == text[::-1]",
             "it doesn't ignore capital letters and spaces",
             ("assert is_palindrome('Level')", "assert is_palindrome('never odd or even')", "assert not is_palindrome('python')"),
             "string slicing"),
    Function("factorial", "n", ("computes the factorial of a number", "returns n factorial"),
             ("factorial of 0 is 1", "use a loop, not recursion"),
             "def factorial(n):\n    result = 1\n    for k in range(2, n + 1):\n        result *= k\n    return result",
             "def factorial(n):\n    result = 1\n    for k in range(2, n):\n        result *= k\n    return result",
             "the loop stops one number too early",
             ("assert factorial(0) == 1", "assert factorial(5) == 120", "assert factorial(1) == 1"),
             "loops and ranges"),
    Function("second_largest", "numbers", ("finds the second largest number in a list", "returns the runner-up value in a list"),
             ("duplicates of the largest value shouldn't count", "the list always has at least two different values"),
             "def second_largest(numbers):\n    return sorted(set(numbers))[-2]",
             "def second_largest(numbers):\n    return sorted(numbers)[-2]",
             "it returns the largest again when the largest value appears twice",
             ("assert second_largest([3, 1, 4, 4]) == 3", "assert second_largest([10, 20]) == 10", "assert second_largest([-1, -5, -3]) == -3"),
             "sets and sorting"),
    Function("dedupe", "items", ("removes duplicates from a list", "gets rid of repeated items in a list"),
             ("it has to keep the original order", "the first copy of each item stays"),
             "def dedupe(items):\n    seen = set()\n    out = []\n    for item in items:\n        if item not in seen:\n            seen.add(item)\n            out.append(item)\n    return out",
             "def dedupe(items):\n    return list(set(items))",
             "it loses the original order",
             ("assert dedupe([3, 1, 3, 2, 1]) == [3, 1, 2]", "assert dedupe([]) == []", "assert dedupe(['b', 'a', 'b']) == ['b', 'a']"),
             "keeping order while removing duplicates"),
    Function("celsius_to_fahrenheit", "celsius", ("converts celsius to fahrenheit", "turns a temperature in celsius into fahrenheit"),
             ("it should work for negative temperatures", "return a float"),
             "def celsius_to_fahrenheit(celsius):\n    return celsius * 9 / 5 + 32",
             "def celsius_to_fahrenheit(celsius):\n    return celsius * 5 / 9 + 32",
             "the 9/5 factor is upside down",
             ("assert celsius_to_fahrenheit(100) == 212", "assert celsius_to_fahrenheit(-40) == -40", "assert celsius_to_fahrenheit(0) == 32"),
             "the conversion formula"),
    Function("word_count", "text", ("counts how often each word appears in a text", "builds a word frequency dictionary from a string"),
             ("words should be compared in lower case", "split on whitespace"),
             "def word_count(text):\n    counts = {}\n    for word in text.lower().split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts",
             "def word_count(text):\n    counts = {}\n    for word in text.split():\n        counts[word] = counts.get(word, 0) + 1\n    return counts",
             "it counts 'The' and 'the' as different words",
             ("assert word_count('the cat the') == {'the': 2, 'cat': 1}", "assert word_count('A a') == {'a': 2}", "assert word_count('') == {}"),
             "dictionaries for counting"),
    Function("running_total", "numbers", ("returns the running totals of a list", "gives the cumulative sums of a list of numbers"),
             ("the output has the same length as the input", "an empty list gives an empty list"),
             "def running_total(numbers):\n    out, total = [], 0\n    for n in numbers:\n        total += n\n        out.append(total)\n    return out",
             "def running_total(numbers):\n    out, total = [], 0\n    for n in numbers:\n        out.append(total)\n        total += n\n    return out",
             "every total is one step behind",
             ("assert running_total([1, 2, 3]) == [1, 3, 6]", "assert running_total([]) == []", "assert running_total([5]) == [5]"),
             "accumulating values in a loop"),
    Function("capitalize_words", "text", ("capitalizes the first letter of every word", "turns a sentence into title case"),
             ("words are separated by single spaces", "the rest of each word should be lower case"),
             "def capitalize_words(text):\n    return ' '.join(w[:1].upper() + w[1:].lower() for w in text.split(' '))",
             "def capitalize_words(text):\n    return ' '.join(w[:1].upper() + w[1:] for w in text.split(' '))",
             "it leaves the rest of each word in capitals",
             ("assert capitalize_words('hello world') == 'Hello World'", "assert capitalize_words('hELLO') == 'Hello'", "assert capitalize_words('a b') == 'A B'"),
             "string methods"),
    Function("fizzbuzz", "n", ("returns the fizzbuzz sequence up to n as a list", "builds the fizz buzz list for the numbers 1 to n"),
             ("multiples of both 3 and 5 become FizzBuzz", "other numbers stay as strings of digits"),
             "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n        if i % 15 == 0:\n            out.append('FizzBuzz')\n        elif i % 3 == 0:\n            out.append('Fizz')\n        elif i % 5 == 0:\n            out.append('Buzz')\n        else:\n            out.append(str(i))\n    return out",
             "def fizzbuzz(n):\n    out = []\n    for i in range(1, n + 1):\n        if i % 3 == 0:\n            out.append('Fizz')\n        elif i % 5 == 0:\n            out.append('Buzz')\n        elif i % 15 == 0:\n            out.append('FizzBuzz')\n        else:\n            out.append(str(i))\n    return out",
             "15 comes out as Fizz instead of FizzBuzz",
             ("assert fizzbuzz(5) == ['1', '2', 'Fizz', '4', 'Buzz']", "assert fizzbuzz(15)[-1] == 'FizzBuzz'", "assert fizzbuzz(0) == []"),
             "the order of if and elif checks"),
    Function("flatten", "nested", ("flattens a list of lists into one list", "joins nested lists into a single flat list"),
             ("only one level of nesting", "empty inner lists are fine"),
             "def flatten(nested):\n    return [item for inner in nested for item in inner]",
             "def flatten(nested):\n    return [inner[0] for inner in nested if inner]",
             "it only keeps the first item of each inner list",
             ("assert flatten([[1, 2], [3]]) == [1, 2, 3]", "assert flatten([[], [4]]) == [4]", "assert flatten([]) == []"),
             "nested list comprehensions"),
    Function("average", "numbers", ("computes the average of a list of numbers", "returns the mean of some numbers"),
             ("an empty list should return 0", "return a float"),
             "def average(numbers):\n    return sum(numbers) / len(numbers) if numbers else 0.0",
             "def average(numbers):\n    return sum(numbers) / len(numbers)",
             "it crashes on an empty list",
             ("assert average([1, 2, 3]) == 2", "assert average([]) == 0", "assert average([5]) == 5"),
             "handling empty inputs"),
    Function("count_words", "text", ("counts the words in a sentence", "tells me how many words a string has"),
             ("several spaces in a row count as one gap", "an empty string has zero words"),
             "def count_words(text):\n    return len(text.split())",
             "def count_words(text):\n    return len(text.split(' '))",
             "double spaces make it count too many words",
             ("assert count_words('one two  three') == 3", "assert count_words('') == 0", "assert count_words('hi') == 1"),
             "splitting strings"),
    Function("max_gap", "numbers", ("finds the largest difference between neighbouring numbers in a list", "returns the biggest jump between consecutive values"),
             ("use the absolute difference", "a list with fewer than two numbers gives 0"),
             "def max_gap(numbers):\n    return max((abs(b - a) for a, b in zip(numbers, numbers[1:])), default=0)",
             "def max_gap(numbers):\n    return max((b - a for a, b in zip(numbers, numbers[1:])), default=0)",
             "it ignores drops because it doesn't take the absolute value",
             ("assert max_gap([1, 10, 2]) == 9", "assert max_gap([9, 1]) == 8", "assert max_gap([4]) == 0"),
             "zip for pairs of neighbours"),
    Function("is_prime", "n", ("checks whether a number is prime", "tells me if an integer is a prime number"),
             ("0 and 1 are not prime", "it should be reasonably fast for numbers up to a million"),
             "def is_prime(n):\n    if n < 2:\n        return False\n    k = 2\n    while k * k <= n:\n        if n % k == 0:\n            return False\n        k += 1\n    return True",
             "def is_prime(n):\n    k = 2\n    while k * k <= n:\n        if n % k == 0:\n            return False\n        k += 1\n    return True",
             "it says 0 and 1 are prime",
             ("assert is_prime(13)", "assert not is_prime(1)", "assert not is_prime(21)"),
             "checking divisors up to the square root"),
    Function("reverse_words", "text", ("reverses the order of the words in a sentence", "flips a sentence so the last word comes first"),
             ("the words themselves stay the same", "words are separated by spaces"),
             "def reverse_words(text):\n    return ' '.join(reversed(text.split()))",
             "def reverse_words(text):\n    return text[::-1]",
             "it reverses the letters, not the words",
             ("assert reverse_words('hello big world') == 'world big hello'", "assert reverse_words('one') == 'one'", "assert reverse_words('') == ''"),
             "joining and reversing lists"),
    Function("clamp", "value", ("keeps a number between 0 and 100", "clamps a value into the range 0 to 100"),
             ("values below 0 become 0", "values above 100 become 100"),
             "def clamp(value):\n    return max(0, min(100, value))",
             "def clamp(value):\n    return min(0, max(100, value))",
             "it always returns 0",
             ("assert clamp(50) == 50", "assert clamp(-5) == 0", "assert clamp(250) == 100"),
             "min and max"),
)
PURPOSES = ("get help writing a small Python function", "get a short Python helper function written",
            "write a small piece of Python code for a task", "get working Python code for a simple utility")
TECH_NOTES = ("The time complexity is linear in the length of the input.", "It relies only on built-in functions, so it has no dependencies.",
              "The implementation avoids mutating its argument, which keeps it side-effect free.")
PLAIN_NOTES = ("It goes through the input once.", "You do not need to install anything to use it.",
               "It does not change the list you pass in.")


def make_task(rng: random.Random, domain: str, expert: bool) -> Task:
    fn = pick(rng, FUNCTIONS)
    ask = pick(rng, fn.asks)
    naming = Shard(f"call it {fn.name} and have it take {fn.arg}", "what the function should be called and what it takes")
    edges = [Shard(e, "how it should handle edge cases") for e in fn.edge]
    shards = [Shard(f"a Python function that {ask}")] + [naming] + edges
    full = (f"Write a Python function {fn.name}({fn.arg}) that {ask}. " + ". ".join(e[:1].upper() + e[1:] for e in fn.edge) + ".")
    check = {"entry_point": fn.name, "reference": fn.code, "tests": "\n".join(fn.tests)}
    return Task("code", "programming", f"{pick(rng, PURPOSES)} that {pick(rng, fn.asks)}", shards, full, check, topic=fn.topic, data={"function": fn})


def answer(rng: random.Random, task: Task, revealed: int, correct: bool, technical: bool) -> Answer:
    fn: Function = task.data["function"]
    code = fn.code if correct and revealed >= len(task.shards) else fn.bug
    notes = TECH_NOTES if technical else PLAIN_NOTES
    what = pick(rng, fn.asks)
    points = [f"The function {fn.name} takes {fn.arg} and {what}.", pick(rng, notes)]
    if code == fn.bug and revealed < len(task.shards):
        points.append("I made some assumptions about the details, so tell me if anything should change.")
    return Answer(lead="Here is the function.", points=points, block=f"```python\n{code}\n```",
                  correct=code == fn.code, correction=fn.bug_note if code == fn.bug else None, result=code)
