#!/usr/bin/env python3
"""Triage a multi-megabyte service log: its error patterns, how often each occurs, when each began, and what
the first failing request did before it failed.

The example writes the log itself (about --mb megabytes, 60 requests a second of a small web shop, four kinds
of failure that start at different times), then works on it as Claude Code would with the rlm skill:

1. start a session on the log;
2. filter with code: grep the ERROR lines, turn each into a pattern (ids and numbers masked), count the
   patterns and note each one's first line - exact work that needs no model;
3. deep-dive with sub-calls: for each pattern, one Haiku call reads the ~50 log lines before its first
   occurrence and quotes the lines of the failing request (its trail);
4. build the report in the REPL, hand it over with FINAL_VAR, print it with `final`, stop the session.

    python3 examples/log_triage.py             # with ANTHROPIC_API_KEY set: real sub-calls (under a cent)
    python3 examples/log_triage.py --offline   # simulated sub-calls from a local fake API
    python3 examples/log_triage.py --dry-run   # price the sub-calls, send nothing
"""
from __future__ import annotations

import datetime
import os
import random

from cli import Session, arguments, backend, workdir

FAILURES = [  # (where in the log it starts, as a fraction; chance per request step; service; message)
    (0.00, 0.004, "pay", "upstream timeout calling payments-gateway after {ms} ms"),
    (0.15, 0.003, "db", "connection pool exhausted (pool=orders, waited {ms} ms)"),
    (0.40, 0.002, "auth", "token signature invalid for user u{n}"),
    (0.70, 0.010, "api", "unhandled KeyError 'customer_id' in POST /orders/{n}"),
]
STEPS = ["GET /cart/{n}", "POST /checkout", "reserve stock sku-{n}", "charge card ending {n}"]
LINES_PER_SECOND = 20


def write_log(path: str, megabytes: float) -> None:
    """A deterministic log: eight requests at a time interleave, each under its own req= id."""
    rnd = random.Random(2026)
    size = megabytes * 1_000_000
    clock = datetime.datetime(2026, 3, 14, 8, 0, 0)
    in_flight, written, n = {}, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        while written < size:
            while len(in_flight) < 8:
                in_flight[f"{rnd.getrandbits(32):08x}"] = 0
            rid = rnd.choice(list(in_flight))
            text, done = request_line(rnd, written / size, rid, in_flight[rid])
            in_flight[rid] += 1
            if done:
                del in_flight[rid]
            n += 1
            line = f"{clock + datetime.timedelta(seconds=n // LINES_PER_SECOND):%Y-%m-%dT%H:%M:%S}Z {text}\n"
            f.write(line)
            written += len(line)


def request_line(rnd, where: float, rid: str, step: int):
    """(text, done): the request's next step, sometimes a WARN, or a failure that ends it."""
    for start, chance, service, message in FAILURES:
        if where >= start and step > 0 and rnd.random() < chance:
            text = message.format(ms=rnd.randint(1000, 30000), n=rnd.randint(100, 99999))
            return f"ERROR {service:<4} req={rid} {text}", True
    if step == len(STEPS):
        return f"INFO  api  req={rid} done in {rnd.randint(5, 900)} ms", True
    if rnd.random() < 0.02:
        return f"WARN  api  req={rid} slow response from cache ({rnd.randint(200, 900)} ms)", False
    return f"INFO  api  req={rid} " + STEPS[step].format(n=rnd.randint(1000, 9999)), False


PATTERNS = r'''
import re
from collections import Counter

errors = grep(r" ERROR ", max_matches=None)           # every ERROR line, exact, no model needed

def pattern(text):
    message = text.split(" ERROR ", 1)[1]
    message = re.sub(r"req=\w+", "", message)         # the request id differs on every line
    message = re.sub(r"\d+", "N", message)            # so do durations, users, order numbers
    return " ".join(message.split())

counts, first = Counter(), {}
for m in errors:
    p = pattern(m.text)
    counts[p] += 1
    first.setdefault(p, m)                             # grep returns lines in order: the first wins
print(f"{errors.total:,} ERROR lines of {context.count(chr(10)):,}; {len(counts)} patterns")
for p, n in counts.most_common():
    print(f"{n:7,}  first at line {first[p].line:,}  {p}")
'''

DEEP_DIVE = r'''
def before(m, chars=4000):
    """The lines up to and including the match's line, about `chars` characters of them."""
    end = context.find("\n", m.start)
    excerpt = context[max(0, m.start - chars):end]
    return excerpt[excerpt.find("\n") + 1:]            # drop the partial first line

requests = {p: re.search(r"req=(\w+)", m.text).group(1) for p, m in first.items()}
prompts = [f"Log excerpt:\n{before(first[p])}\n\n"
           f'Question: which lines in this excerpt mention "req={requests[p]}"? Quote them whole, in order.'
           for p in counts]
trails = llm_query_batch(prompts, system="You read service logs and quote lines exactly as written.")
failed = [t for t in trails if t.startswith("[llm_query error")]
print(f"{len(trails)} trails read, {len(failed)} failed")
'''

REPORT = r'''
trail = dict(zip(counts, trails))                      # prompts were made in the order of counts
rows = [f"Error patterns in the log ({errors.total:,} ERROR lines, {len(counts)} patterns)", ""]
for p, n in counts.most_common():
    m = first[p]
    rows += [f"- {p}", f"  count: {n}", f"  first: line {m.line} at {m.text[:20]} (req={requests[p]})",
             "  trail of that request:"]
    rows += ["    " + line.strip() for line in trail[p].strip().splitlines()]
report = "\n".join(rows)
FINAL_VAR("report")
'''


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--mb", type=float, default=5.0, help="size of the generated log (default 5 MB)")
    args = parser.parse_args()
    with workdir(args.workdir) as folder, backend(args):
        log = os.path.join(folder, "shop.log")
        write_log(log, args.mb)
        session = Session("log-triage", args)
        session.start(log)
        session.answer([("patterns, counts and first occurrences, by code", PATTERNS),
                        ("deep dive: one sub-call per pattern", DEEP_DIVE)],
                       [("the report, handed over with FINAL_VAR", REPORT)], args.offline)


if __name__ == "__main__":
    main()
