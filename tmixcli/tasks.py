"""Seedable synthetic long-context tasks (needle, multi-key, multi-value, variable tracking), built locally.

Every case is sized in tokens of the real chat prompt (`build_prompt`), so eval measures what users get.
The haystack holds no digits and no upper-case runs, so each answer number appears in the document once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from tmixcli.eval_answer import normalised
from tmixcli.prompt import Tokenizer, build_prompt

TASKS = ("needle", "multikey", "multivalue", "vt")
DEPTHS = (0.1, 0.3, 0.5, 0.7, 0.9)

ADJ = ("quiet", "golden", "rapid", "hidden", "silver", "bright", "gentle", "frozen", "hollow", "crimson",
       "lucky", "ancient", "broken", "clever", "distant", "eager", "fragile", "humble", "proud", "velvet")
NOUN = ("lizard", "harbor", "lantern", "meadow", "falcon", "violin", "canyon", "pepper", "saddle", "orchid",
        "beacon", "turnip", "glacier", "kettle", "walrus", "compass", "thimble", "cactus", "anchor", "ribbon")
TOWN = ("Ashford", "Brenmoor", "Calder", "Dunmere", "Elmsworth", "Fairhaven", "Glenrock", "Hollins",
        "Ivybridge", "Kestrel", "Larkfield", "Millbrook", "Northwick", "Oakridge", "Pinecroft", "Redwater")
GOODS = ("wool", "salt", "timber", "barley", "copper", "linen", "cheese", "honey", "wine", "leather", "flour",
         "candles", "pottery", "rope", "glass", "spices")
WEATHER = ("a light rain", "thick fog", "a cold wind", "clear skies", "heavy snow", "a warm breeze",
           "low clouds", "a sudden storm", "bright sunshine", "a soft drizzle")
PEOPLE = ("the miller", "the baker", "a young shepherd", "the old ferryman", "two merchants", "the blacksmith",
          "a travelling monk", "the schoolteacher", "the innkeeper", "a group of children")
PLACES = ("the market square", "the river bank", "the stone bridge", "the village green", "the harbor wall",
          "the chapel steps", "the mill pond", "the orchard gate", "the north road", "the old granary")
FILLER = ("quietly", "slowly", "as usual", "once again", "without hurry", "for a while", "in the morning",
          "before noon", "at dusk", "after supper", "with some care", "now and then")
TEMPLATES = (
    "In {town} the day began with {weather}, and {person} walked to {place} {filler}.",
    "Traders from {town} carried {good} along the north road, hoping to sell it {filler}.",
    "{Person} said that the price of {good} in {town} had not changed since the spring.",
    "By the afternoon {weather} had settled over {town}, so most people stayed near {place}.",
    "The road between {town} and {town2} was busy with carts of {good} and {good2}.",
    "{Person} repaired a fence near {place} {filler} while the dogs slept in the shade.",
    "Nobody in {town} could remember a season with so much {good} stored in the cellars.",
    "A letter from {town2} asked whether {person} could send more {good} before the winter.",
    "The children of {town} gathered at {place} to watch the boats {filler}.",
    "When {weather} came over the hills, the farmers of {town} covered their {good} with canvas.",
    "{Person} kept a small garden behind {place}, and tended it {filler}.",
    "It is said in {town} that good {good} is worth a long journey and a tired horse.",
)


@dataclass
class Case:
    """One question over one generated document; correct iff every answer appears in the generated text."""

    task: str
    depth: float
    document: str
    question: str
    answers: list[str]
    tokens: int = 0
    lead: str = ""

    @property
    def reference(self) -> str:
        """A natural full answer: lead + the answers (calibration scores the tokens after the lead)."""
        return f"{self.lead} {', '.join(self.answers)}."

    def to_dict(self) -> dict:
        return asdict(self)


def _sentence(rng: random.Random) -> str:
    town, town2 = rng.sample(TOWN, 2)
    good, good2 = rng.sample(GOODS, 2)
    person = rng.choice(PEOPLE)
    text = rng.choice(TEMPLATES).format(
        town=town, town2=town2, good=good, good2=good2, person=person, Person=person[0].upper() + person[1:],
        weather=rng.choice(WEATHER), place=rng.choice(PLACES), filler=rng.choice(FILLER))
    return text[0].upper() + text[1:]


def _number(rng: random.Random, digits: int, used: set[str]) -> str:
    while True:
        n = str(rng.randint(10 ** (digits - 1), 10**digits - 1))
        if n not in used:
            used.add(n)
            return n


def _key(rng: random.Random, used: set[str]) -> str:
    while True:
        k = f"{rng.choice(ADJ)}-{rng.choice(NOUN)}"
        if k not in used:
            used.add(k)
            return k


def _var(rng: random.Random, used: set[str]) -> str:
    while True:
        v = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ") for _ in range(5))
        if v not in used:
            used.add(v)
            return v


def _needles(task: str, depth: float, rng: random.Random) -> tuple[list[tuple[float, str]], str, list[str], str]:
    """(needles as (depth, sentence), question, answers, answer lead) for one task."""
    nums: set[str] = set()
    keys: set[str] = set()
    if task == "needle":
        key, num = _key(rng, keys), _number(rng, 7, nums)
        return ([(depth, f"The special magic number for {key} is {num}.")],
                f"What is the special magic number for {key}?", [num], f"The special magic number for {key} is")
    if task == "multikey":
        key, num = _key(rng, keys), _number(rng, 7, nums)
        needles = [(depth, f"The special magic number for {key} is {num}.")]
        for _ in range(3):  # distractors after the target, within 0.3 of its depth
            other = f"The special magic number for {_key(rng, keys)} is {_number(rng, 7, nums)}."
            needles.append((min(0.95, depth + rng.uniform(0.02, 0.3)), other))
        return (needles, f"What is the special magic number for {key}?", [num],
                f"The special magic number for {key} is")
    if task == "multivalue":
        key = _key(rng, keys)
        vals = [_number(rng, 7, nums) for _ in range(2)]
        spread = [depth, min(0.95, max(0.05, depth + rng.choice((-0.2, 0.2))))]
        needles = [(d, f"One of the special magic numbers for {key} is {v}.")
                   for d, v in zip(spread, vals, strict=True)]
        return (needles, f"What are all the special magic numbers for {key}?", vals,
                f"The special magic numbers for {key} are")
    if task == "vt":
        value = _number(rng, 5, nums)
        names = [_var(rng, keys) for _ in range(3)]
        steps = [f"VAR {names[0]} = {value}."] + [f"VAR {b} = VAR {a}." for a, b in zip(names, names[1:], strict=False)]
        spots = [depth + (1 - depth) * i / (len(steps) + 1) for i in range(len(steps))]
        return (list(zip(spots, steps, strict=True)),
                f"Which variables are assigned the value {value}? List the variable names.", names,
                f"The variables assigned the value {value} are")
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def _assemble(hay: list[str], needles: list[tuple[float, str]]) -> str:
    sents = list(hay)
    for d, text in sorted(needles, key=lambda x: x[0], reverse=True):
        sents.insert(round(d * len(hay)), text)
    return " ".join(sents)


def _prompt_len(tokenizer: Tokenizer, document: str, question: str) -> int:
    return len(build_prompt(tokenizer, document, question).ids)


def _haystack(tokenizer: Tokenizer, budget: int, rng: random.Random) -> list[str]:
    """Sentences whose tokens add up to about `budget`."""
    hay: list[str] = []
    total = 0
    while total < budget:
        s = _sentence(rng)
        hay.append(s)
        total += len(tokenizer(" " + s, add_special_tokens=False)["input_ids"])
    return hay


def _bare_sizes(tokenizer: Tokenizer, tasks: Sequence[str]) -> list[int]:
    """Prompt tokens of each task with no haystack (its needles and question alone)."""
    sizes = []
    for task in tasks:
        needles, question, _, _ = _needles(task, 0.5, random.Random(0))
        sizes.append(_prompt_len(tokenizer, _assemble([], needles), question))
    return sizes


def bare_prompt_tokens(tokenizer: Tokenizer, tasks: Sequence[str]) -> int:
    """The shortest prompt length the tasks can be built at: their largest needles-and-question prompt."""
    return max(_bare_sizes(tokenizer, tasks))


def shared_haystack(tokenizer: Tokenizer, tasks: Sequence[str], length: int, seed: int = 0) -> list[str]:
    """The sentences every case of (seed, length) is built on, sized for the tasks' mean needle overhead."""
    rng = random.Random(f"tmix-{seed}-{length}-hay")
    sizes = _bare_sizes(tokenizer, tasks)
    return _haystack(tokenizer, length - sum(sizes) // len(sizes), rng)


def haystack_document(tokenizer: Tokenizer, tasks: Sequence[str], length: int, seed: int = 0) -> str:
    """The needle-free document of (seed, length): every case's text starts like it (see `make_cases`)."""
    return " ".join(shared_haystack(tokenizer, tasks, length, seed))


def make_cases(tokenizer: Tokenizer, tasks: Sequence[str], n: int, length: int, seed: int = 0) -> list[Case]:
    """n cases cycling over tasks and depths, all in one shared haystack (like NIAH's fixed essays).

    Case i has its own keys/values and depth, inserted between the haystack's sentences; the text before
    a case's first needle equals `haystack_document`'s, so eval can reuse that prefix's KV.
    The same (seed, length, index) always gives the same case."""
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"unknown task {t!r}; choose from {', '.join(TASKS)}")
    hay = shared_haystack(tokenizer, tasks, length, seed)
    cases = []
    for i in range(n):
        task = tasks[i % len(tasks)]
        depth = DEPTHS[(i // len(tasks)) % len(DEPTHS)]
        rng = random.Random(f"tmix-{seed}-{length}-{i}")
        needles, question, answers, lead = _needles(task, depth, rng)
        doc = _assemble(hay, needles)
        cases.append(Case(task, depth, doc, question, answers, _prompt_len(tokenizer, doc, question), lead))
    return cases


def score(text: str, answers: list[str]) -> bool:
    """Exact match: every answer appears in the generated text (eval_answer.normalised: case, spacing and thousands
    separators aside)."""
    t = normalised(text)
    return all(normalised(a) in t for a in answers)
