#!/usr/bin/env python3
"""Review a source tree: one sub-call per file, the findings merged into one report.

By default the example writes a small shop application with a few planted problems (an eval of user input,
a bare except that hides failures, hard-coded credentials, an unfinished refund path) next to clean files;
--path reviews a tree of your own instead. It works as Claude Code would with the rlm skill:

1. start a session on the tree (--glob '**/*.py');
2. per-file map: for each file in `context_files`, one prompt with the file's numbered lines and the review
   task; all of them in one parallel batch (a shared `system` prompt). For a big repository, pack small files
   into fewer, fatter prompts, as SKILL.md shows;
3. merge with code: parse the "- line N: ..." findings, group them by file, count them;
4. hand the report over with FINAL_VAR, print it with `final`, stop the session.

    python3 examples/code_review.py                 # with ANTHROPIC_API_KEY set: real sub-calls (under a cent)
    python3 examples/code_review.py --offline       # simulated sub-calls from a local fake API
    python3 examples/code_review.py --dry-run       # price the sub-calls, send nothing
    python3 examples/code_review.py --path ~/code/myapp/src
"""
from __future__ import annotations

import os

from cli import Session, arguments, backend, workdir

SHOP = {
    "shop/__init__.py": '"""A tiny shop."""\n',
    "shop/models.py": (
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Item:\n    sku: str\n    price_cents: int\n    quantity: int = 1\n\n"
        "    def total(self) -> int:\n        return self.price_cents * self.quantity\n"),
    "shop/calc.py": (
        '"""Price formulas typed in by shop managers."""\n\n\n'
        "def apply_formula(formula: str, price: float) -> float:\n"
        "    # managers type formulas such as 'price * 0.9'\n"
        "    return eval(formula, {}, {'price': price})\n"),
    "shop/db.py": (
        "import sqlite3\n\n"
        'DB_USER = "shop"\n'
        'password = "hunter2"\n\n\n'
        "def connect(path: str):\n    return sqlite3.connect(path)\n\n\n"
        "def find_orders(conn, customer: str):\n"
        "    return conn.execute(\"SELECT * FROM orders WHERE customer = ?\", (customer,)).fetchall()\n"),
    "shop/payments.py": (
        "import json\nimport urllib.request\n\n"
        'api_key = "sk_live_51HxQ2example"\n\n\n'
        "def charge(order_id: str, cents: int) -> bool:\n"
        "    body = json.dumps({'order': order_id, 'amount': cents}).encode()\n"
        "    try:\n"
        "        urllib.request.urlopen('https://payments.example/charge', body, timeout=10)\n"
        "        return True\n"
        "    except:\n"
        "        return True\n"),
    "shop/orders.py": (
        "from .models import Item\n\n\n"
        "def order_total(items: list) -> int:\n    return sum(item.total() for item in items)\n\n\n"
        "def refund(order, items: list) -> int:\n"
        "    # TODO: partial refunds are not handled; this refunds everything\n"
        "    return order_total(items)\n"),
}

MAP = r'''
def numbered(f):
    text = context[f["start"]:f["end"]]
    return "\n".join(f"{n:4}| {line}" for n, line in enumerate(text.splitlines(), 1))

task = ("Task: review the file above ({path}) for bugs, security risks and unfinished work. Write one "
        "finding per line as - line N: the code, then why it matters. Write NONE if the file is fine.")
prompts = [f"{numbered(f)}\n\n" + task.format(path=f["path"]) for f in context_files]
reviews = llm_query_batch(prompts, system="You are a careful senior Python reviewer. Report real problems "
                                          "only, most serious first, and cite line numbers exactly.")
failed = [f["path"] for f, r in zip(context_files, reviews) if r.startswith("[llm_query error")]
print(f"{len(reviews)} files reviewed, {len(failed)} failed {failed or ''}")
'''

MERGE = r'''
import re

findings = {}                                         # path -> [(line, text)]
for f, review in zip(context_files, reviews):
    for m in re.finditer(r"^\s*-\s*line (\d+):\s*(.+)$", review, re.MULTILINE):
        findings.setdefault(f["path"], []).append((int(m.group(1)), m.group(2).strip()))
total = sum(len(v) for v in findings.values())
rows = [f"Code review: {total} findings in {len(findings)} of {len(context_files)} files", ""]
for path in sorted(findings):
    rows.append(f"{path}")
    rows += [f"  line {line}: {text}" for line, text in sorted(findings[path])]
clean = [f["path"] for f in context_files if f["path"] not in findings and f["path"] not in failed]
rows += ["", "No findings: " + (", ".join(clean) or "none")]
if failed:
    rows.append("Not reviewed (sub-call failed; re-run to retry): " + ", ".join(failed))
report = "\n".join(rows)
print(f"{total} findings merged")
FINAL_VAR("report")
'''


def write_shop(folder: str) -> str:
    for path, text in SHOP.items():
        full = os.path.join(folder, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w", encoding="utf-8") as f:
            f.write(text)
    return os.path.join(folder, "shop")


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--path", help="review this folder's *.py files instead of the generated shop")
    args = parser.parse_args()
    with workdir(args.workdir) as folder, backend(args):
        tree = os.path.abspath(args.path) if args.path else write_shop(folder)
        session = Session("code-review", args)
        os.chdir(os.path.dirname(tree))                # so paths in the report read shop/db.py
        session.start(os.path.basename(tree), glob="**/*.py")
        session.answer([("per-file map: one review sub-call per file", MAP)],
                       [("merge the findings into one report; FINAL_VAR", MERGE)], args.offline)


if __name__ == "__main__":
    main()
