#!/usr/bin/env python3
"""Find one fact in a long haystack: the special magic number for one city, hidden in megabytes of text
among the numbers of other cities.

The example writes the haystack itself (about --mb megabytes of filler prose with a sentence like "The
special magic number for Valparaiso is: 4417305." hidden in it, and the numbers of four other cities as
distractors), then works on it as Claude Code would with the rlm skill:

1. start a session on the haystack;
2. chunk-and-aggregate: cut it into fat 250k-character chunks and ask Haiku the same question about each
   chunk in one parallel batch; keep the answers that are a number;
3. verify with code: grep where each candidate number occurs;
4. hand the answer over with FINAL_VAR, print it with `final`, stop the session.

    python3 examples/needle_search.py             # with ANTHROPIC_API_KEY set: real sub-calls (~30 cents)
    python3 examples/needle_search.py --offline   # simulated sub-calls from a local fake API
    python3 examples/needle_search.py --dry-run   # price the sub-calls, send nothing
"""
from __future__ import annotations

import os
import random

from cli import Session, arguments, backend, workdir

CITIES = ["Valparaiso", "Tromso", "Windhoek", "Kyoto", "Cartagena"]
WORDS = ("the river city market winter harbour light evening road stone garden letter window morning old "
         "quiet long small bright bridge train north south story people house music summer field").split()


def write_haystack(path: str, megabytes: float, seed: int = 7) -> dict:
    """Filler prose with one magic-number sentence per city at a random place; returns the numbers."""
    rnd = random.Random(seed)
    numbers = {city: rnd.randint(1_000_000, 9_999_999) for city in CITIES}
    lines = int(megabytes * 1_000_000 / 95)
    spots = dict(zip(rnd.sample(range(lines), len(CITIES)), CITIES))
    with open(path, "w", encoding="utf-8") as f:
        for i in range(lines):
            words = [rnd.choice(WORDS) for _ in range(15)]
            f.write(" ".join(words).capitalize() + ".\n")
            if i in spots:
                city = spots[i]
                f.write(f"The special magic number for {city} is: {numbers[city]}.\n")
    return numbers


SEARCH = r'''
import re

city = CITY
parts = chunks(250_000)                                 # fat chunks: ~80k tokens each, few calls
question = (f"Question: what is the special magic number for {city} mentioned in the text above? "
            "Reply with the number only, or NONE if the text does not give it.")
answers = llm_query_batch([f"{part}\n\n{question}" for part in parts], max_tokens=50)
failed = [i for i, a in enumerate(answers) if a.startswith("[llm_query error")]
found = {}                                              # candidate number -> chunks that gave it
for i, answer in enumerate(answers):
    if i in failed:
        continue
    for number in re.findall(r"\b\d{5,}\b", answer):
        found.setdefault(number, []).append(i)
print(f"{len(parts)} chunks, {len(failed)} failed; candidates: {found or 'none'}")
'''

VERIFY = r'''
lines = []
for number in found:
    hits = grep(re.escape(number))                      # where does it really occur?
    lines += [f"{number} (line {m.line}: {m.text})" for m in hits]
answer = (f"The special magic number for {city} is {' or '.join(found)}.\nWhere: " + "; ".join(lines)
          if found else f"No special magic number for {city} was found.")
if failed:
    answer += f"\n({len(failed)} of {len(parts)} chunks could not be read: run the search again to retry them.)"
FINAL_VAR("answer")
'''


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--mb", type=float, default=8.0, help="size of the generated haystack (default 8 MB)")
    parser.add_argument("--city", default=CITIES[0], choices=CITIES, help="whose number to find")
    args = parser.parse_args()
    with workdir(args.workdir) as folder, backend(args):
        haystack = os.path.join(folder, "haystack.txt")
        write_haystack(haystack, args.mb)
        session = Session("needle", args)
        session.start(haystack)
        session.answer([(f"ask every chunk for the number of {args.city}", SEARCH.replace("CITY", repr(args.city)))],
                       [("verify the candidates with grep; FINAL_VAR", VERIFY)], args.offline)


if __name__ == "__main__":
    main()
