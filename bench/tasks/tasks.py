"""Tasks after the Recursive Language Models paper: generators and scorers.

Every task is a ``Task``: a text of about ``size`` tokens (4 characters a
token, as ``start`` estimates), a question, the expected answer, and a scorer
that gives 0..1 for an answer. Generation is deterministic in (kind, size, seed).

needle         S-NIAH: a few lines "The special magic number for KEY is: NNNNNNN."
               in a haystack of filler prose; asked for one KEY, the others are
               distractors. Score 1 when the answer has its number and no other.
count          OOLONG-style aggregation over thousands of short labelled records
               ("... | user=u042 | label: refund | msg: ..."): how many records
               have label L. Score 0.75 ** |answer - truth|, as OOLONG scores numbers.
most_frequent  the same records: which label is the most frequent. Exact match.
pairs          OOLONG-Pairs style: every pair of users who both have a record
               labelled "escalation" (a rare label used by a few users). F1 over pairs.

Filler and records hold no digits runs of seven, no "?" and no label words
outside the label field, so questions and answers cannot be confused with data.
"""
from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, field
from typing import Callable

CHARS_PER_TOKEN = 4
SIZES = {"8k": 8_000, "32k": 32_000, "128k": 128_000, "512k": 512_000, "1M": 1_000_000}
KINDS = ("needle", "count", "most_frequent", "pairs")

ADJECTIVES = ("amber quiet silver hollow northern gentle crimson patient distant bright woven narrow "
              "ancient restless mossy golden humble frozen").split()
NOUNS = ("harbor falcon lantern meadow river orchard compass canyon beacon garden willow engine "
         "island archive bridge forest tower valley").split()
VERBS = "watched crossed followed remembered carried measured painted guarded described visited".split()
PLACES = "the old mill|the station|the market square|the lighthouse|the library|the ridge".split("|")
LABELS = ("billing", "refund", "shipping", "login", "feedback", "spam")
RARE_LABEL = "escalation"
MESSAGES = ("the parcel arrived late again", "cannot reset the password", "charged twice this month",
            "please close my account", "the app crashes on start", "great service, thanks",
            "wrong item in the box", "where is my order", "the invoice shows the old address",
            "win a free cruise now", "the tracking page is blank", "love the new design")


@dataclass
class Task:
    kind: str
    size: str
    text: str
    question: str
    expected: object
    scorer: Callable = field(repr=False)
    info: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.kind}-{self.size}"

    def score(self, answer: str) -> float:
        return float(self.scorer(answer or "", self.expected))


def make(kind: str, size: str, seed: int = 0) -> Task:
    """The task of ``kind`` at ``size`` (a key of SIZES)."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; choose from {', '.join(KINDS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; choose from {', '.join(SIZES)}")
    rng = random.Random(f"{kind}/{size}/{seed}")
    chars = SIZES[size] * CHARS_PER_TOKEN
    if kind == "needle":
        return _needle(rng, size, chars)
    records, users = _records(rng, chars)
    return {"count": _count, "most_frequent": _most_frequent, "pairs": _pairs}[kind](rng, size, records, users)


# ---------------------------------------------------------------- needle in a haystack

def _sentence(rng) -> str:
    return (f"The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(VERBS)} the {rng.choice(ADJECTIVES)} "
            f"{rng.choice(NOUNS)} near {rng.choice(PLACES)}.")


def _needle(rng, size: str, chars: int) -> Task:
    pool = [" ".join(_sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(500)]
    lines, total = [], 0
    while total < chars:
        line = rng.choice(pool)
        lines.append(line)
        total += len(line) + 1
    keys = rng.sample([f"{a}-{n}" for a in ADJECTIVES for n in NOUNS], 3)
    numbers = [str(rng.randint(1_000_000, 9_999_999)) for _ in keys]
    for key, number in zip(keys, numbers):
        lines.insert(rng.randint(0, len(lines)), f"The special magic number for {key} is: {number}.")
    question = f"What is the special magic number for {keys[0]}?"
    return Task("needle", size, "\n".join(lines) + "\n", question, numbers[0], score_needle,
                {"distractors": numbers[1:], "depth": _depth(lines, keys[0])})


def _depth(lines, key) -> float:
    at = next(i for i, line in enumerate(lines) if key in line)
    return round(at / max(1, len(lines) - 1), 3)


def score_needle(answer: str, expected) -> float:
    found = set(re.findall(r"\d{7}", answer))
    return 1.0 if found == {expected} else 0.0


# ---------------------------------------------------------------- labelled records (OOLONG-style)

def _records(rng, chars: int):
    """Records of about ``chars`` characters; a few users also have rare 'escalation' records."""
    users = [f"u{i:03d}" for i in range(1, 151)]
    weights = sorted((rng.random() for _ in LABELS), reverse=True)
    labels = list(LABELS)
    rng.shuffle(labels)  # which label is the most frequent changes with the seed
    escalators = rng.sample(users, rng.randint(5, 9))
    records, total, day = [], 0, 0
    while total < chars:
        day += 1
        label = rng.choices(labels, weights)[0]
        record = _record(rng, day, rng.choice(users), label)
        records.append(record)
        total += len(record) + 1
    extra = max(len(escalators), len(records) // 150)
    for i in range(extra):
        user = escalators[i] if i < len(escalators) else rng.choice(escalators)
        records.insert(rng.randint(0, len(records)), _record(rng, rng.randint(1, day), user, RARE_LABEL))
    return records, escalators


def _record(rng, n: int, user: str, label: str) -> str:
    return (f"2026-{1 + n % 12:02d}-{1 + n % 28:02d} {n % 24:02d}:{rng.randint(0, 59):02d} | user={user} | "
            f"label: {label} | msg: {rng.choice(MESSAGES)}")


def _tally(records) -> dict:
    counts: dict = {}
    for record in records:
        label = record.split("label: ", 1)[1].split(" |", 1)[0]
        counts[label] = counts.get(label, 0) + 1
    return counts


def _text(records) -> str:
    return "\n".join(records) + "\n"


def _count(rng, size, records, users) -> Task:
    label = rng.choice(LABELS)
    question = f'How many records have the label "{label}"?'
    return Task("count", size, _text(records), question, _tally(records)[label], score_count,
                {"records": len(records)})


def _most_frequent(rng, size, records, users) -> Task:
    counts = _tally(records)
    top = sorted(counts.items(), key=lambda kv: -kv[1])
    if len(top) > 1 and top[0][1] == top[1][1]:  # a tie has no single right answer: break it
        records.append(_record(rng, 1, users[0], top[0][0]))
    question = "Which label is the most frequent among the records? Answer with the label only."
    return Task("most_frequent", size, _text(records), question, top[0][0], score_label,
                {"records": len(records), "counts": _tally(records)})


def _pairs(rng, size, records, users) -> Task:
    question = (f'List every pair of distinct users who both have at least one record labelled "{RARE_LABEL}". '
                "Write each pair as uA-uB with the lower id first, separated by commas.")
    expected = {f"{a}-{b}" for a, b in itertools.combinations(sorted(users), 2)}
    return Task("pairs", size, _text(records), question, expected, score_pairs,
                {"records": len(records), "users": sorted(users)})


def score_count(answer: str, expected: int) -> float:
    match = re.search(r"-?\d[\d,]*", answer)
    if not match:
        return 0.0
    return 0.75 ** abs(int(match.group().replace(",", "")) - expected)


def score_label(answer: str, expected: str) -> float:
    named = {label for label in LABELS + (RARE_LABEL,) if re.search(rf"\b{label}\b", answer.lower())}
    return 1.0 if named == {expected} else 0.0


def score_pairs(answer: str, expected: set) -> float:
    got = {"-".join(sorted(p)) for p in re.findall(r"(u\d+)\s*-\s*(u\d+)", answer)}
    if not got or not expected:
        return float(got == expected)
    hits = len(got & expected)
    precision, recall = hits / len(got), hits / len(expected)
    return 0.0 if hits == 0 else 2 * precision * recall / (precision + recall)
