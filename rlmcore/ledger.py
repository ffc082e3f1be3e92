"""The session ledger: one SQLite database per session (``ledger.sqlite``).

It holds every sub-call (usage, cost, latency, attempts, outcome), the budget
limits with what is spent and what is reserved for requests in flight, the
responses already paid for (an identical request is never paid twice), and the
history of execs. The worker writes it from its batch threads; the CLI's
``status``, ``budget`` and ``trace`` read it from another process meanwhile.

Concurrency. WAL mode lets readers in other processes see the last committed
state while the worker writes. Within a process one connection is shared under
a lock (cheaper than twenty connections spinning in SQLite's busy handler).
Across processes every write is one short ``BEGIN IMMEDIATE`` transaction,
which takes the write lock up front, and ``busy_timeout`` waits for it. Reads
of several tables run in one transaction so they see one snapshot. Open one
``Ledger`` per process; never share one across ``fork``.

Budget. ``reserve`` checks spent + reserved + requested against every limit
and inserts the reservation in the same write transaction, so no interleaving
of threads or processes can reserve past a limit. ``finish_call`` swaps the
reservation for the real cost in one transaction. Money is kept in integer
nano-dollars (USD x 10^9) so sums are exact: in floats, three reservations of
0.1 would not fit a 0.3 limit. The spend lives in the ``budget`` row, kept in
step with ``calls`` by the same transactions, so a check never sums the calls.
A reservation records its owner's pid; one left behind by a crashed process
is settled by the next ``reserve`` once that pid is gone, otherwise it would
hold back budget forever. Its request may have been sent and billed, so it is
not simply dropped: a reservation made with ``if_lost`` becomes a call with
error_type ``worker_lost`` at that record's expected cost (reservations for
retries, made without one, are dropped). ``budget`` counts those as spent
from the moment the owner is gone. (Should the pid be reused meanwhile, the
reservation waits for that process to end: it errs towards refusing, never
overspending.)

Damage. A truncated or garbage file raises ``LedgerError`` naming the file; it
is never recreated silently, since a fresh ledger would forget the spend. The
way out the error names: move the file aside, then ``rlm_repl.py budget``
with limits starts a fresh one, which the worker picks up at its next exec.

Schema (``trace`` reads these tables directly; times are Unix seconds):

    migrations(name TEXT PRIMARY KEY, applied REAL)
    meta(key TEXT PRIMARY KEY, value TEXT)                  'created'
    budget(id = 1, max_calls INTEGER, max_usd REAL, max_tokens INTEGER,   NULL = no limit
           spent_calls INTEGER, spent_nano_usd INTEGER, spent_tokens INTEGER)
    reservations(id INTEGER PRIMARY KEY, pid INTEGER, calls INTEGER,
                 nano_usd INTEGER, tokens INTEGER, created REAL,
                 if_lost TEXT (JSON: the calls row to insert should the owner die first, or NULL))
    calls(id INTEGER PRIMARY KEY, exec_id INTEGER, batch_id TEXT, item INTEGER,
          parent_call_id INTEGER, model TEXT, status TEXT, attempts INTEGER,
          input_tokens INTEGER, output_tokens INTEGER,
          cache_read_input_tokens INTEGER, cache_creation_input_tokens INTEGER,
          usd REAL, started REAL, latency_s REAL, error_type TEXT, error TEXT,
          stop_reason TEXT, request_id TEXT, request_hash TEXT)
        status: ok, error   request sent, counted in the budget (finish_call, or a lost reservation)
                reused      answered from ``responses``, free
                dry_run     not sent; usd is what it would have cost
                budget      refused by a limit, not sent
    responses(request_hash TEXT PRIMARY KEY, response TEXT (JSON), created REAL)
    execs(id INTEGER PRIMARY KEY, code TEXT, started REAL, ended REAL,
          outcome TEXT (running|ok|error|timeout|interrupted),
          stdout_chars INTEGER, error_type TEXT)
    index calls_summary(exec_id, status, attempts, the four token columns, usd):
        covers the per-exec and whole-session summaries, so they never read the call rows.
"""
from __future__ import annotations

import functools
import json
import math
import os
import sqlite3
import stat
import threading
import time
from contextlib import contextmanager
from urllib.parse import quote

from .errors import BudgetExceeded, InputError, LedgerError

BUSY_TIMEOUT_S = 30.0
WARN_FRACTION = 0.8
NANO = 10 ** 9

KEEP = object()  # set_limits: leave this limit as it is

SENT = ("ok", "error")
UNBILLED = ("reused", "dry_run", "budget")
OUTCOMES = ("ok", "error", "timeout", "interrupted")

RECORD_FIELDS = (
    "exec_id", "batch_id", "item", "parent_call_id", "model", "status", "attempts",
    "input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
    "usd", "started", "latency_s", "error_type", "error", "stop_reason", "request_id",
)
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens")

# Each migration is applied once, in order, in one transaction. Statements are
# split on ";", so keep semicolons out of literals.
MIGRATIONS = [
    ("001_initial", """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
        CREATE TABLE budget (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            max_calls INTEGER, max_usd REAL, max_tokens INTEGER,
            spent_calls INTEGER NOT NULL DEFAULT 0,
            spent_nano_usd INTEGER NOT NULL DEFAULT 0,
            spent_tokens INTEGER NOT NULL DEFAULT 0);
        INSERT INTO budget (id) VALUES (1);
        CREATE TABLE reservations (
            id INTEGER PRIMARY KEY, pid INTEGER NOT NULL, calls INTEGER NOT NULL,
            nano_usd INTEGER NOT NULL, tokens INTEGER NOT NULL, created REAL NOT NULL);
        CREATE TABLE calls (
            id INTEGER PRIMARY KEY, exec_id INTEGER, batch_id TEXT, item INTEGER,
            parent_call_id INTEGER, model TEXT, status TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_input_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_input_tokens INTEGER NOT NULL DEFAULT 0,
            usd REAL NOT NULL DEFAULT 0, started REAL, latency_s REAL,
            error_type TEXT, error TEXT, stop_reason TEXT, request_id TEXT, request_hash TEXT);
        CREATE INDEX calls_summary ON calls (exec_id, status, attempts, input_tokens, output_tokens,
            cache_read_input_tokens, cache_creation_input_tokens, usd);
        CREATE TABLE responses (request_hash TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL);
        CREATE TABLE execs (
            id INTEGER PRIMARY KEY, code TEXT NOT NULL, started REAL NOT NULL, ended REAL,
            outcome TEXT NOT NULL DEFAULT 'running', stdout_chars INTEGER NOT NULL DEFAULT 0,
            error_type TEXT);
    """),
    ("002_reservation_if_lost", """
        ALTER TABLE reservations ADD COLUMN if_lost TEXT
    """),
]
LOST = ("worker_lost", "the process that sent this request exited before its answer came; "
        "the API may have billed it, so its expected cost is counted")

# Per (exec, status) sums; the covering index calls_summary answers this without touching the table
# rows, in index order, so totals over 100,000 calls read one narrow index and sort nothing.
_GROUPS_SELECT = """
    SELECT exec_id, status, COUNT(*), TOTAL(MAX(attempts - 1, 0)), TOTAL(input_tokens), TOTAL(output_tokens),
           TOTAL(cache_read_input_tokens), TOTAL(cache_creation_input_tokens), TOTAL(usd)
    FROM calls {where} GROUP BY exec_id, status
"""
SUMMARY_KEYS = ("count", "failed", "retries", "input_tokens", "output_tokens", "cache_read_tokens",
                "cache_write_tokens", "usd", "reused", "dry_run", "dry_run_usd")
LIMITS = ("max_calls", "max_usd", "max_tokens")
_FLAGS = {"max_calls": "--max-calls N", "max_usd": "--max-usd X", "max_tokens": "--max-tokens N"}
_UNITS = {"max_calls": "calls", "max_usd": "USD", "max_tokens": "tokens"}
_SPENT_KEY = {"max_calls": "calls", "max_usd": "usd", "max_tokens": "tokens"}


def _guarded(method):
    """Serialise a public method on the connection and turn SQLite failures into LedgerError."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            if self._conn is None:
                raise LedgerError(f"the ledger {self.path} is closed", "open it again")
            try:
                return method(self, *args, **kwargs)
            except sqlite3.ProgrammingError:
                raise  # a bug in this module, not a state of the file
            except sqlite3.DatabaseError as exc:
                raise _translate(self.path, exc) from exc

    return wrapper


class Ledger:
    def __init__(self, path: str, *, create: bool = False):
        self.path = os.path.abspath(path)
        self.session = _session_of(self.path)  # None for a library ledger (rlm_helper)
        self.created = False  # True when this open made a new ledger: the caller sets its limits
        self._lock = threading.RLock()
        self._conn = None
        self._prepare_file(create)
        try:
            self._conn = self._connect()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.close()
            raise _translate(self.path, exc) from exc
        except BaseException:
            self.close()
            raise

    # ---- opening -------------------------------------------------------

    def _prepare_file(self, create: bool) -> None:
        """Create the file 0600 if asked; refuse a missing, empty or damaged one."""
        if create:
            try:
                os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
                self.created = True
                return
            except FileExistsError:
                pass
            except OSError as exc:
                raise LedgerError(f"cannot create the ledger {self.path}: {exc.strerror or exc}",
                                  "check that the session folder exists, is yours and the disk has room") from exc
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                header = f.read(100)
        except FileNotFoundError:
            raise LedgerError(f"the session has no ledger: {self.path} does not exist",
                              f"{_fresh_ledger_way(self.path)}, or start the session again with "
                              "'rlm_repl.py start'") from None
        except OSError as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc.strerror or exc}",
                              "check that the file is yours and readable") from exc
        if st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(self.path, 0o600)
        if not header and create:
            self.created = True  # left empty by an interrupted create: nothing was ever recorded
            return
        problem = _header_problem(header, st.st_size, self._wal_size())
        if problem:
            raise _damaged(self.path, problem)

    def _wal_size(self) -> int:
        try:
            return os.path.getsize(self.path + "-wal")
        except OSError:
            return 0

    def _connect(self) -> sqlite3.Connection:
        # mode=rw: SQLite must never create the file itself (that would skip the 0600 and damage checks).
        uri = "file:" + quote(self.path) + "?mode=rw"
        conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S,
                               isolation_level=None, check_same_thread=False)
        if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() != "wal":
            raise LedgerError(f"cannot switch the ledger {self.path} to WAL mode",
                              "the file system may not support it; put RLM_HOME on a local disk")
        # Under WAL, NORMAL syncs at checkpoints, not at every commit: a power cut may lose the last
        # few calls but never corrupts the file, and it is what makes 1,000 commits/s possible.
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _migrate(self) -> None:
        names = self._applied_migrations()
        if all(name in names for name, _ in MIGRATIONS):
            return
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
            names = {r[0] for r in db.execute("SELECT name FROM migrations")}  # re-read under the write lock
            for name, sql in MIGRATIONS:
                if name in names:
                    continue
                for statement in filter(str.strip, sql.split(";")):
                    db.execute(statement)
                db.execute("INSERT INTO migrations VALUES (?, ?)", (name, time.time()))
            db.execute("INSERT OR IGNORE INTO meta VALUES ('created', ?)", (repr(time.time()),))

    def _applied_migrations(self) -> set:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "migrations" in tables:
            return {r[0] for r in self._conn.execute("SELECT name FROM migrations")}
        if tables:
            raise _damaged(self.path, "it is an SQLite database but not an rlm ledger")
        return set()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- transactions --------------------------------------------------

    @contextmanager
    def _write(self):
        """One write transaction holding SQLite's write lock from its first statement."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back already (disk full, I/O error)
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _read(self):
        """One read transaction: every query inside sees the same snapshot."""
        conn = self._conn
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

    # ---- limits and budget ---------------------------------------------

    @_guarded
    def limits(self) -> dict:
        row = self._conn.execute("SELECT max_calls, max_usd, max_tokens FROM budget").fetchone()
        return dict(zip(LIMITS, row))

    @_guarded
    def set_limits(self, *, max_calls=KEEP, max_usd=KEEP, max_tokens=KEEP) -> dict:
        """Change some limits (None lifts one). A limit below the spend is allowed: reserves then fail."""
        given = {"max_calls": max_calls, "max_usd": max_usd, "max_tokens": max_tokens}
        changes = {k: _check_limit(k, v) for k, v in given.items() if v is not KEEP}
        if changes:
            with self._write() as db:
                db.execute("UPDATE budget SET " + ", ".join(f"{k} = ?" for k in changes), tuple(changes.values()))
        return self.limits()

    @_guarded
    def budget(self) -> dict:
        with self._read() as db:
            state = self._state(db, drop_dead=False)
        limits, spent, reserved = state
        out_spent = _public(spent)
        out_reserved = _public(reserved)
        remaining = {}
        for name in LIMITS:
            key = _SPENT_KEY[name]
            limit = _to_units(name, limits[name])
            remaining[key] = None if limit is None else _from_units(name, max(0, limit - spent[key] - reserved[key]))
        return {"limits": limits, "spent": out_spent, "reserved": out_reserved,
                "remaining": remaining, "warnings": _warnings(limits, spent)}

    def _state(self, db, *, drop_dead: bool):
        """(limits, spent, reserved); spent and reserved in calls, nano-USD and tokens.

        Reservations of dead owners count as spent at their ``if_lost`` cost; with ``drop_dead``
        they are settled for good (inserted as calls, the reservations deleted).
        """
        row = db.execute("SELECT max_calls, max_usd, max_tokens, spent_calls, spent_nano_usd, spent_tokens "
                         "FROM budget").fetchone()
        limits = dict(zip(LIMITS, row[:3]))
        spent = {"calls": row[3], "usd": row[4], "tokens": row[5]}
        dead = _dead_pids(db)
        lost = _lost_calls(db, dead)
        lost_cost = _cost_of(lost)
        for key in spent:
            spent[key] += lost_cost[key]
        if drop_dead and dead:
            _settle_lost(db, dead, lost, lost_cost)
            dead = []
        reserved = {"calls": 0, "usd": 0, "tokens": 0}
        for pid, calls, nano_usd, tokens in db.execute(
                "SELECT pid, SUM(calls), SUM(nano_usd), SUM(tokens) FROM reservations GROUP BY pid"):
            if pid not in dead:
                reserved["calls"] += calls
                reserved["usd"] += nano_usd
                reserved["tokens"] += tokens
        return limits, spent, reserved

    # ---- reservations and calls ----------------------------------------

    @_guarded
    def reserve(self, *, usd: float, tokens: int, calls: int = 1, if_lost: dict | None = None) -> int:
        """Hold back the worst case of a request before sending it; BudgetExceeded if it cannot fit.

        ``if_lost`` is the call record (expected usage and usd) counted should this process die
        before settling the reservation.
        """
        want = {"calls": _count("calls", calls), "usd": _nano(usd), "tokens": _count("tokens", tokens)}
        lost = None
        if if_lost is not None:
            record = dict(if_lost, status="error", error_type=LOST[0], error=LOST[1])
            lost = json.dumps(_call_row(record, record.get("request_hash"), SENT))
        with self._write() as db:
            limits, spent, reserved = self._state(db, drop_dead=True)
            refusal = _refusal(self.session, limits, spent, reserved, want)
            if refusal is None:
                cur = db.execute("INSERT INTO reservations (pid, calls, nano_usd, tokens, created, if_lost) "
                                 "VALUES (?, ?, ?, ?, ?, ?)",
                                 (os.getpid(), want["calls"], want["usd"], want["tokens"], time.time(), lost))
                return cur.lastrowid
        raise refusal  # after the commit, so reclaimed reservations stay reclaimed

    @_guarded
    def release(self, reservation_id: int) -> None:
        """Drop a reservation whose request was not sent (nothing billed). Unknown ids are ignored."""
        with self._write() as db:
            db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))

    @_guarded
    def finish_call(self, reservation_id, *, request_hash, response: dict | None, record: dict) -> int:
        """Settle a sent request (status ok or error) in one transaction; returns the call id.

        The reservation (None if there was none) is replaced by the record's real cost, the response is
        stored under ``request_hash`` when given, and the call row is inserted. The real cost is counted
        even if it is more than was reserved: a paid call is never hidden.
        """
        row = _call_row(record, request_hash, SENT)
        tokens = sum(row[f] for f in TOKEN_FIELDS)
        blob = None if response is None else json.dumps(response, separators=(",", ":"))
        with self._write() as db:
            if reservation_id is not None:
                db.execute("DELETE FROM reservations WHERE id = ?", (reservation_id,))
            db.execute("UPDATE budget SET spent_calls = spent_calls + 1, spent_nano_usd = spent_nano_usd + ?, "
                       "spent_tokens = spent_tokens + ?", (_nano(row["usd"]), tokens))
            if blob is not None:
                db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (request_hash, blob, time.time()))
            return _insert_call(db, row)

    @_guarded
    def record_call(self, record: dict) -> int:
        """Record a call that reserved and billed nothing: status reused, dry_run or budget."""
        row = _call_row(record, record.get("request_hash"), UNBILLED)
        with self._write() as db:
            return _insert_call(db, row)

    @_guarded
    def cached_response(self, request_hash: str) -> dict | None:
        row = self._conn.execute("SELECT response FROM responses WHERE request_hash = ?", (request_hash,)).fetchone()
        return None if row is None else json.loads(row[0])

    # ---- summaries -----------------------------------------------------

    @_guarded
    def exec_calls(self, exec_id: int) -> dict:
        return _summary(self._conn.execute(_GROUPS_SELECT.format(where="WHERE exec_id = ?"), (exec_id,)))

    @_guarded
    def totals(self) -> dict:
        return _summary(self._conn.execute(_GROUPS_SELECT.format(where="")))

    @_guarded
    def exec_summaries(self) -> dict:
        """{exec_id: summary} for every exec with calls (key None: calls made outside an exec)."""
        by_exec = {}
        for row in self._conn.execute(_GROUPS_SELECT.format(where="")):
            by_exec.setdefault(row[0], []).append(row)
        return {exec_id: _summary(rows) for exec_id, rows in by_exec.items()}

    @_guarded
    def select(self, *queries) -> list:
        """Run read-only ``(sql, params)`` queries in one snapshot; one list of rows per query.

        For readers of the schema above (``trace``), so their figures agree with each other
        even while the worker writes."""
        with self._read() as db:
            return [db.execute(sql, params).fetchall() for sql, params in queries]

    # ---- exec history --------------------------------------------------

    @_guarded
    def begin_exec(self, code: str) -> int:
        with self._write() as db:
            return db.execute("INSERT INTO execs (code, started) VALUES (?, ?)", (code, time.time())).lastrowid

    @_guarded
    def end_exec(self, exec_id: int, *, outcome: str, stdout_chars: int = 0, error_type: str | None = None):
        if outcome not in OUTCOMES:
            raise ValueError(f"exec outcome must be one of {OUTCOMES}, got {outcome!r}")
        with self._write() as db:
            cur = db.execute("UPDATE execs SET ended = ?, outcome = ?, stdout_chars = ?, error_type = ? "
                             "WHERE id = ?", (time.time(), outcome, stdout_chars, error_type, exec_id))
            if cur.rowcount == 0:
                raise LedgerError(f"no exec {exec_id} in the ledger {self.path}")

    @_guarded
    def interrupt_running_execs(self) -> list:
        """Mark execs still 'running' as 'interrupted' (their worker died); return their ids."""
        with self._write() as db:
            ids = [i for (i,) in db.execute("SELECT id FROM execs WHERE outcome = 'running' ORDER BY id")]
            db.execute("UPDATE execs SET outcome = 'interrupted', ended = ? WHERE outcome = 'running'", (time.time(),))
            return ids

    @_guarded
    def execs(self, limit: int | None = None) -> list:
        """Exec history, oldest first; ``limit`` keeps only the most recent."""
        sql = "SELECT id, code, started, ended, outcome, stdout_chars, error_type FROM execs ORDER BY id DESC"
        rows = self._conn.execute(sql + " LIMIT ?", (-1 if limit is None else limit,)).fetchall()
        keys = ("id", "code", "started", "ended", "outcome", "stdout_chars", "error_type")
        return [dict(zip(keys, r)) for r in reversed(rows)]


# ---- helpers -------------------------------------------------------------

def _header_problem(header: bytes, size: int, wal_size: int) -> str | None:
    """Why the first 100 bytes show the file is not a whole SQLite database, or None."""
    if len(header) < 100:
        return f"it is {size} bytes long, shorter than an SQLite header"
    if not header.startswith(b"SQLite format 3\x00"):
        return "it does not start with an SQLite header"
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_size_valid = header[24:28] == header[92:96]
    # With a non-empty WAL an interrupted checkpoint can leave the file short; SQLite repairs that itself.
    if header_size_valid and not wal_size and size < pages * page_size:
        return f"it is truncated ({size} bytes, its header says {pages * page_size})"
    return None


def _damaged(path: str, why: str) -> LedgerError:
    return LedgerError(
        f"the ledger {path} is damaged: {why}",
        f"move it aside (mv {path} {path}.broken), then {_fresh_ledger_way(path)}; "
        "spend recorded in it will no longer count against the limits",
        path=path,
    )


def _session_of(path: str):
    """The id of the session whose ledger is at ``path``, or None (a library ledger)."""
    folder = os.path.dirname(path)
    return os.path.basename(folder) if os.path.basename(os.path.dirname(folder)) == "sessions" else None


def _fresh_ledger_way(path: str) -> str:
    """How to start a fresh ledger at ``path``: a session's is made only when asked for, with its limits."""
    session = _session_of(path)
    if session is not None:
        return (f"start a fresh one with its limits: 'rlm_repl.py budget --session {session} "
                "--max-usd X' (and --max-calls, --max-tokens as you wish)")
    return "a fresh one is made at the next use"


def _translate(path: str, exc: sqlite3.DatabaseError) -> LedgerError:
    text = str(exc)
    low = text.lower()
    if "readonly" in low or "read-only" in low:
        return LedgerError(f"cannot write the ledger {path}: {text}",
                           "make the session folder and its files writable by you, or remount the disk read-write",
                           path=path)
    if "full" in low:
        return LedgerError(f"cannot write the ledger {path}: the disk is full",
                           "free some disk space and run the command again", path=path)
    if "locked" in low or "busy" in low:
        return LedgerError(f"the ledger {path} stayed locked for more than {BUSY_TIMEOUT_S:g} s",
                           "another rlm process is holding it; wait for it and retry", path=path)
    if "malformed" in low or "not a database" in low or "corrupt" in low:
        return _damaged(path, text)
    return LedgerError(f"ledger {path}: {text}", "check the file and the disk it is on", path=path)


def _dead_pids(db) -> list:
    me = os.getpid()
    return [pid for (pid,) in db.execute("SELECT DISTINCT pid FROM reservations WHERE pid != ?", (me,))
            if not _alive(pid)]


def answer_text(message: dict) -> str:
    """The text of a Messages API answer: its ``text`` blocks joined (thinking and tool blocks left out)."""
    blocks = message.get("content") or []
    return "".join(b.get("text", "") for b in blocks if isinstance(b, dict) and b.get("type") == "text")


def _lost_calls(db, dead: list) -> list:
    """The call rows that dead owners' reservations stand for (those made with ``if_lost``)."""
    if not dead:
        return []
    marks = ", ".join("?" * len(dead))
    return [json.loads(text) for (text,) in db.execute(
        f"SELECT if_lost FROM reservations WHERE pid IN ({marks}) AND if_lost IS NOT NULL", dead)]


def _cost_of(rows: list) -> dict:
    return {"calls": len(rows), "usd": sum(_nano(r["usd"]) for r in rows),
            "tokens": sum(r[f] for r in rows for f in TOKEN_FIELDS)}


def _settle_lost(db, dead: list, lost: list, cost: dict) -> None:
    for row in lost:
        _insert_call(db, row)
    db.execute("UPDATE budget SET spent_calls = spent_calls + ?, spent_nano_usd = spent_nano_usd + ?, "
               "spent_tokens = spent_tokens + ?", (cost["calls"], cost["usd"], cost["tokens"]))
    db.executemany("DELETE FROM reservations WHERE pid = ?", [(p,) for p in dead])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A process that has exited but is not yet reaped. In a container whose PID 1 does not reap
    orphans, a killed worker stays one for good, and its reservations must not wait for it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except (OSError, IndexError):
        return False  # no /proc (macOS): kill(pid, 0) is all there is


def _check_limit(name: str, value):
    """A limit as stored: None, a non-negative int (calls, tokens) or float (USD)."""
    bad = value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                 or not math.isfinite(value) or value < 0)
    if not bad and value is not None and name != "max_usd":
        bad = value != int(value)
    if bad:
        kind = "number" if name == "max_usd" else "whole number"
        raise InputError(f"{name} must be a non-negative {kind} or None (no limit), got {value!r}",
                         f"give {_FLAGS[name].split()[0]} a value like "
                         f"{'0.50' if name == 'max_usd' else '1000'}")
    if value is None:
        return None
    return float(value) if name == "max_usd" else int(value)


def _nano(usd) -> int:
    if isinstance(usd, bool) or not isinstance(usd, (int, float)) or not math.isfinite(usd) or usd < 0:
        raise ValueError(f"usd must be a non-negative number, got {usd!r}")
    return round(usd * NANO)


def _count(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    return value


def _to_units(name: str, limit):
    """A limit in the units the budget row counts in (nano-USD for money)."""
    if limit is None:
        return None
    return round(limit * NANO) if name == "max_usd" else limit


def _from_units(name: str, amount):
    return amount / NANO if name == "max_usd" else amount


def _public(amounts: dict) -> dict:
    return {"calls": amounts["calls"], "usd": amounts["usd"] / NANO, "tokens": amounts["tokens"]}


def _refusal(session, limits: dict, spent: dict, reserved: dict, want: dict) -> BudgetExceeded | None:
    over = [n for n in LIMITS if limits[n] is not None
            and spent[_SPENT_KEY[n]] + reserved[_SPENT_KEY[n]] + want[_SPENT_KEY[n]] > _to_units(n, limits[n])]
    if not over:
        return None
    parts = []
    for n in over:
        k = _SPENT_KEY[n]
        parts.append(f"{n} {_fmt(n, _to_units(n, limits[n]))} {_UNITS[n]} "
                     f"(spent {_fmt(n, spent[k])}, reserved {_fmt(n, reserved[k])}, "
                     f"this request {_fmt(n, want[k])})")
    first = over[0]
    k = _SPENT_KEY[first]
    raise_it = (f"'rlm_repl.py budget --session {session} {_FLAGS[first]}'" if session is not None
                else f"rlm_helper.engine().ledger.set_limits({first}=...)")
    return BudgetExceeded(
        "request not sent: it would pass " + "; ".join(parts),
        f"raise the limit with {raise_it}, or ask for less: a smaller max_tokens or fewer calls",
        limit=first, spent=_from_units(first, spent[k]), reserved=_from_units(first, reserved[k]),
        requested=_from_units(first, want[k]), max=limits[first],
    )


def _fmt(name: str, amount) -> str:
    """Amounts for messages: money from nano-USD with 2-6 decimals, counts with thousands separators."""
    if name == "max_usd":
        text = f"{amount / NANO:.6f}".rstrip("0")
        return text + "0" * max(0, 2 - len(text.split(".")[1]))
    return f"{amount:,}"


def _warnings(limits: dict, spent: dict) -> list:
    out = []
    for n in LIMITS:
        limit = _to_units(n, limits[n])
        used = spent[_SPENT_KEY[n]]
        if limit is None or used < WARN_FRACTION * limit:
            continue
        if limit == 0:
            out.append(f"{n} is 0: no sub-call can be made")
        else:
            out.append(f"spent {math.floor(100 * used / limit)}% of {n} "
                       f"({_fmt(n, used)} of {_fmt(n, limit)} {_UNITS[n]})")
    return out


def _call_row(record: dict, request_hash, statuses: tuple) -> dict:
    unknown = set(record) - set(RECORD_FIELDS) - {"request_hash"}
    if unknown:
        raise ValueError(f"unknown call record fields: {sorted(unknown)}")
    status = record.get("status")
    if status not in statuses:
        raise ValueError(f"call status must be one of {statuses} here, got {status!r}")
    row = {f: record.get(f) for f in RECORD_FIELDS}
    for f in TOKEN_FIELDS:
        row[f] = _count(f, row[f] or 0)
    row["attempts"] = row["attempts"] if row["attempts"] is not None else int(status in SENT)
    row["usd"] = float(row["usd"] or 0)
    _nano(row["usd"])  # validates
    row["started"] = row["started"] if row["started"] is not None else time.time()
    row["request_hash"] = request_hash
    return row


def _insert_call(db, row: dict) -> int:
    cols = ", ".join(row)
    marks = ", ".join("?" * len(row))
    return db.execute(f"INSERT INTO calls ({cols}) VALUES ({marks})", tuple(row.values())).lastrowid


def _summary(groups) -> dict:
    """Fold (exec_id, status, count, retries, tokens..., usd) groups into the figures of one summary."""
    out = dict.fromkeys(SUMMARY_KEYS, 0)
    out["usd"] = out["dry_run_usd"] = 0.0
    for _, status, count, retries, inp, outp, cread, cwrite, usd in groups:
        if status in SENT:
            out["count"] += count
            out["retries"] += int(retries)
            out["input_tokens"] += int(inp)
            out["output_tokens"] += int(outp)
            out["cache_read_tokens"] += int(cread)
            out["cache_write_tokens"] += int(cwrite)
            out["usd"] += usd
        if status in ("error", "budget"):
            out["failed"] += count
        if status == "reused":
            out["reused"] += count
        if status == "dry_run":
            out["dry_run"] += count
            out["dry_run_usd"] += usd
    out["usd"] = round(out["usd"], 9)
    out["dry_run_usd"] = round(out["dry_run_usd"], 9)
    return out
