"""A deterministic stand-in for the root model, for running the task suite offline.

``respond(body)`` is a responder for the fake Messages API (tests/fake_api.py):
it answers root requests (those with the loop's system prompt) and returns None
for everything else, so the fake's reader answers the sub-calls. Like a root
model it looks at the input first, then writes the code a careful person would
write for the kind of question: cut the input into chunks, ask each chunk the
question with llm_query_batch, combine the answers in Python, FINAL.

The kind of task is read from the question, so it works for any text with a
question phrased as in tasks.py, at any size.
"""
from __future__ import annotations

import re

from rlmcore import loop

# Under 100k Haiku 5.5 tokens (its cheaper price tier) per sub-call.
CHUNK = 280_000
# Matching-lines answers stop at 50 lines: chunks small enough to hold fewer rare records.
PAIRS_CHUNK = 100_000

# Items refused by the budget (reservations are for the worst case, so a wide batch of fat chunks can
# meet the limit while actual spend is far below it) or failed after retries get one more try, alone.
ASK = """\
def ask(prompts, prefix=None):
    answers = llm_query_batch(prompts, prefix=prefix)
    for i, a in enumerate(answers):
        if a.startswith("[llm_query error"):
            answers[i] = llm_query(prompts[i], prefix=prefix)
    return answers
"""

LOOK = """\
print(f"{len(context):,} characters, {context.count(chr(10)):,} lines")
print(peek(0, 300))"""

NEEDLE = """\
import re
question = {question!r}
parts = chunks({chunk})
answers = ask([p + "\\n\\nQuestion: " + question for p in parts])
found = []
for a in answers:
    for number in re.findall(r"\\d{{7}}", a):
        if number not in found:
            found.append(number)
print(len(parts), "chunks; found", found)
FINAL(", ".join(found) if found else "NONE")"""

COUNT = """\
import re
question = 'Question: How many lines contain "label: {label}"? Answer with the number only.'
parts = chunks({chunk})
answers = ask([p + "\\n\\n" + question for p in parts])
counts = [int(re.search(r"\\d+", a).group()) if re.search(r"\\d+", a) else 0 for a in answers]
print(len(parts), "chunks; counts", counts)
FINAL(sum(counts))"""

MOST_FREQUENT = """\
import re
labels = sorted(set(re.findall(r"label: (\\w+)", context)))
totals = dict.fromkeys(labels, 0)
questions = [f'Question: How many lines contain "label: {{l}}"? Answer with the number only.' for l in labels]
for part in chunks({chunk}):
    for label, a in zip(labels, ask(questions, prefix=part)):
        m = re.search(r"\\d+", a)
        totals[label] += int(m.group()) if m else 0
print(totals)
FINAL(max(totals, key=totals.get))"""

PAIRS = """\
import itertools, re
question = 'Question: Which lines contain "label: {label}"? List them.'
parts = chunks({chunk})
found = ask([p + "\\n\\n" + question for p in parts])
users = sorted({{u for a in found for u in re.findall(r"user=(u\\d+)", a)}})
pairs = [f"{{a}}-{{b}}" for a, b in itertools.combinations(users, 2)]
print(len(parts), "chunks;", len(users), "users;", len(pairs), "pairs")
FINAL(", ".join(pairs) if pairs else "NONE")"""


def is_root(body: dict) -> bool:
    system = body.get("system")
    return isinstance(system, list) and bool(system) and system[0].get("text") == loop.SYSTEM_PROMPT


def solution(question: str) -> str:
    """The code for a question phrased as in tasks.py."""
    quoted = re.search(r'"([^"]+)"', question)
    if re.search(r"magic number", question, re.I):
        return NEEDLE.format(question=question, chunk=CHUNK)
    if re.search(r"\bmost frequent\b", question, re.I):
        return MOST_FREQUENT.format(chunk=CHUNK)
    if re.search(r"\bpairs?\b", question, re.I) and quoted:
        return PAIRS.format(label=quoted.group(1), chunk=PAIRS_CHUNK)
    if re.search(r"\bhow many\b", question, re.I) and quoted:
        return COUNT.format(label=quoted.group(1), chunk=CHUNK)
    return 'FINAL("I do not know how to answer this kind of question.")'


def respond(body: dict):
    if not is_root(body):
        return None
    messages = body["messages"]
    first = messages[0]["content"][0]["text"]
    question = first.split("\n", 1)[0][len("Question: "):]
    turn = sum(m["role"] == "assistant" for m in messages)
    if "used all" in messages[-1]["content"][-1]["text"]:
        return "NONE"  # asked for a best answer: the scripted code did not finish
    if turn == 0:
        return f"First, the shape of the input.\n```repl\n{LOOK}\n```"
    if turn == 1:
        return f"Now the answer.\n```repl\n{ASK}{solution(question)}\n```"
    return 'The code above failed; I have no answer.\n```repl\nFINAL("NONE")\n```'
