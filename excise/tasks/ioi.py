"""Indirect Object Identification (IOI), generated as in the circuit literature (Wang et al., 2022).

"When Mary and John went to the store, John gave a drink to" -> " Mary" (the
indirect object, IO) rather than " John" (the repeated subject, S). Prompts come
from several templates, in both name orders (ABBA: IO first; BABA: S first),
with names, places and objects drawn from lists filtered to words that are one
token (with their leading space) for the given tokenizer, seeded. The corrupted
counterpart of a prompt replaces its three name slots with three other distinct
names (the "ABC" distribution), so it differs only in names and carries no IO
signal: the baseline for ablations.
"""

from __future__ import annotations

import random

from excise.errors import ExciseError
from excise.tasks.base import Task, TaskExample

# {a} and {b} are the two names introduced first, {c} is the repeated subject.
TEMPLATES = (
    "When {a} and {b} went to the {place}, {c} gave a {object} to",
    "Then, {a} and {b} went to the {place}. {c} gave a {object} to",
    "After {a} and {b} went to the {place}, {c} gave a {object} to",
    "While {a} and {b} were working at the {place}, {c} gave a {object} to",
    "When {a} and {b} got a {object} at the {place}, {c} decided to give it to",
    "Friends {a} and {b} found a {object} at the {place}. {c} gave it to",
    "Then, {a} and {b} had a long argument at the {place}. Afterwards {c} said to",
    "The {place} that {a} and {b} visited had a {object}. {c} handed it to",
)
NAMES = (
    "Mary", "John", "Tom", "James", "Michael", "David", "Sarah", "Emma", "Anna", "Paul",
    "Mark", "Laura", "Kevin", "Lisa", "Peter", "Daniel", "Robert", "Jessica", "Chris", "Alex",
    "Steven", "Rachel", "Andrew", "Jennifer", "Richard", "Karen", "Brian", "Amy", "Jason", "Kate",
    "George", "Sam", "Ryan", "Eric", "Adam", "Helen", "Frank", "Jack", "Henry", "Lucy",
)
PLACES = (
    "store", "garden", "restaurant", "school", "hospital", "office", "station", "park", "beach",
    "library", "market", "house", "church", "museum", "hotel", "airport",
)
OBJECTS = (
    "drink", "ring", "book", "bone", "ball", "computer", "necklace", "snack", "apple", "letter",
    "gift", "key", "bag", "flower", "hat", "phone",
)
ORDERS = ("ABBA", "BABA")
_MIN_NAMES = 5  # three distinct names per corrupted prompt plus the two it replaces


def single_token_words(tokenizer, words: tuple[str, ...]) -> list[str]:
    """The words that are exactly one token when preceded by a space."""
    return [w for w in words if len(tokenizer.encode(" " + w, add_special_tokens=False)) == 1]


def make_example(template: str, order: str, io: str, s: str, place: str, obj: str, corrupt: tuple[str, str, str]) -> TaskExample:
    first, second = (io, s) if order == "ABBA" else (s, io)
    fill = {"place": place, "object": obj}
    x, y, z = corrupt
    return TaskExample(
        prompt=template.format(a=first, b=second, c=s, **fill),
        correct=" " + io,
        incorrect=" " + s,
        corrupted=template.format(a=x, b=y, c=z, **fill),
    )


class IoiTask(Task):
    name = "ioi"
    strict_tokens = True
    has_corrupted = True

    def examples(self, tokenizer, count: int, seed: int) -> list[TaskExample]:
        names = single_token_words(tokenizer, NAMES)
        places = single_token_words(tokenizer, PLACES)
        objects = single_token_words(tokenizer, OBJECTS)
        if len(names) < _MIN_NAMES or not places or not objects:
            raise ExciseError(
                f"this tokenizer has too few single-token IOI words ({len(names)} names, {len(places)} places, "
                f"{len(objects)} objects); IOI needs >= {_MIN_NAMES} names and one place and object"
            )
        rng = random.Random(seed)
        seen: set[str] = set()
        out: list[TaskExample] = []
        attempts = 0
        while len(out) < count:
            attempts += 1
            if attempts > 100 * count:
                raise ExciseError(f"cannot generate {count} distinct IOI prompts; ask for fewer")
            io, s, *corrupt = rng.sample(names, 5)
            example = make_example(
                rng.choice(TEMPLATES), ORDERS[len(out) % 2], io, s, rng.choice(places), rng.choice(objects),
                tuple(corrupt),
            )
            if example.prompt not in seen:
                seen.add(example.prompt)
                out.append(example)
        return out

