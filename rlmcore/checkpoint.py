"""Checkpoints of the session namespace, so a restarted worker gets its variables back.

Pickle is the checkpoint, never the transport: after each exec the worker saves
only what changed, one file per variable plus a manifest written last, each
replaced atomically. To keep a trivial exec cheap whatever the namespace holds:

- an immutable value (str, int, tuple, ...) still bound to the same object is
  not pickled again;
- a value whose pickle passes ``max_bytes`` is abandoned as soon as the limit is
  reached (the pickler writes into a bounded sink), named in ``dropped``, and
  not retried while the same object of the same length stays bound;
- a value whose pickle passes ``BIG_BYTES``, when the exec's code names none
  of the mutable objects its last pickle went through (so no alias such as
  ``inner = data['k']`` can have changed it) and calls no code defined in the
  REPL, and its cheap fingerprint (type, length, identity of a few elements)
  is unchanged, is taken as unchanged without pickling it again;
- everything else is pickled and written only when its bytes changed.

Functions, classes and modules are not pickled: the ``import``, ``def`` and
``class`` statements of earlier execs are recorded in ``replay.py`` and run
again on restore. What cannot come back is named, never silently lost.
"""
from __future__ import annotations

import ast
import collections
import hashlib
import io
import itertools
import json
import os
import pickle
import types

from .errors import CheckpointError
from .paths import atomic_write, check_trusted_dir, ensure_private_dir

DEFAULT_MAX_BYTES = 64 << 20
BIG_BYTES = 64 << 10  # below this, pickling again costs about what the check saves
REFLECTIVE = {"exec", "eval", "globals", "vars", "setattr", "delattr", "__import__", "locals"}
IMMUTABLE = (str, bytes, int, float, complex, bool, type(None), tuple, frozenset, range)
DEFINITIONS = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)


class _TooLarge(Exception):
    pass


class _BoundedSink(io.RawIOBase):
    """A write-only buffer that refuses to grow past ``limit`` bytes."""

    def __init__(self, limit: int):
        self.limit = limit
        self.parts: list = []
        self.size = 0

    def writable(self):
        return True

    def write(self, b) -> int:
        self.size += len(b)
        if self.size > self.limit:
            raise _TooLarge()
        self.parts.append(bytes(b))
        return len(b)


def pickle_bounded(value, limit: int) -> tuple:
    """(the pickle's bytes, the pickler, whose memo names every object it went through)."""
    sink = _BoundedSink(limit)
    pickler = pickle.Pickler(sink, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.dump(value)
    return b"".join(sink.parts), pickler


def is_definition(value) -> bool:
    return isinstance(value, (types.ModuleType, types.FunctionType, type))


class _Seen:
    """What the last save learnt about one variable."""

    __slots__ = ("value", "digest", "too_large_len", "fingerprint", "reachable")

    def __init__(self, value, digest=None, too_large_len=None, pickler=None):
        self.value, self.digest, self.too_large_len = value, digest, too_large_len
        self.fingerprint = self.reachable = None
        if pickler is not None:
            self.fingerprint = fingerprint(value)
            # Ids of the mutable objects inside the value: code naming one of them may have changed it.
            self.reachable = frozenset(i for i, (_, obj) in pickler.memo.copy().items()
                                       if not isinstance(obj, IMMUTABLE))


class Checkpointer:
    def __init__(self, folder: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.folder = folder
        self.max_bytes = max_bytes
        self.manifest_path = os.path.join(folder, "manifest.json")
        self.replay_path = os.path.join(folder, "replay.py")
        self._seen: dict = {}  # name -> _Seen
        self.manifest = {"vars": {}, "dropped": {}}

    # -- saving -------------------------------------------------------------

    def save(self, namespace: dict, skip: set, code: str | None = None) -> list:
        """Save changed variables; return ``dropped`` as ``[{name, reason}]``.

        ``code`` is the exec that just ran: big values it cannot have touched
        are not pickled again (None: check everything).
        """
        ensure_private_dir(self.folder)
        current = {n: v for n, v in namespace.items()
                   if n not in skip and not n.startswith("__")}
        touched = touched_objects(code, namespace)
        dropped = {}
        changed = False
        for name, value in current.items():
            reason, did_write = self._save_one(name, value, touched)
            changed |= did_write
            if reason:
                dropped[name] = reason
        for name in list(self.manifest["vars"]):
            if name not in current or name in dropped:
                self._forget(name)
                changed = True
        for name in list(self._seen):
            if name not in current:
                del self._seen[name]
        if changed or dropped != self.manifest["dropped"]:
            self.manifest["dropped"] = dropped
            atomic_write(self.manifest_path, json.dumps(self.manifest).encode())
        return [{"name": n, "reason": r} for n, r in sorted(dropped.items())]

    def _save_one(self, name: str, value, touched):
        """Return (drop reason or None, whether a file was written)."""
        if is_definition(value):
            return self._definition_reason(name, value), False
        seen = self._seen.get(name)
        if seen is not None and seen.value is value:
            if seen.digest is not None and (isinstance(value, IMMUTABLE) or _untouched(seen, touched)):
                return None, False
            if seen.too_large_len is not None and _length(value) == seen.too_large_len:
                return self._too_large_reason(value), False
        try:
            data, pickler = pickle_bounded(value, self.max_bytes)
        except _TooLarge:
            self._seen[name] = _Seen(value, too_large_len=_length(value))
            return self._too_large_reason(value), False
        except Exception as exc:  # unpicklable values are many and varied
            self._seen[name] = _Seen(value)
            return f"cannot be pickled ({type(exc).__name__}: {str(exc)[:200]})", False
        digest = hashlib.sha256(data).hexdigest()
        self._seen[name] = _Seen(value, digest, pickler=pickler if len(data) >= BIG_BYTES else None)
        entry = self.manifest["vars"].get(name)
        if entry and entry["digest"] == digest:
            return None, False
        filename = hashlib.sha256(name.encode()).hexdigest()[:32] + ".pkl"
        atomic_write(os.path.join(self.folder, filename), data)
        self.manifest["vars"][name] = {"file": filename, "digest": digest, "type": type(value).__name__}
        return None, True

    def _too_large_reason(self, value) -> str:
        return (f"larger than the checkpoint limit of {self.max_bytes >> 20} MiB when pickled "
                f"({type(value).__name__}); it is kept in memory but would be lost if the worker restarts: "
                "recompute it from context")

    def _definition_reason(self, name, value):
        if name in self.recorded_names():
            return None
        kind = "module" if isinstance(value, types.ModuleType) else "function or class"
        return f"{kind} not bound by an import/def/class statement, so it cannot be replayed after a restart"

    def _forget(self, name: str) -> None:
        entry = self.manifest["vars"].pop(name, None)
        if entry:
            try:
                os.unlink(os.path.join(self.folder, entry["file"]))
            except OSError:
                pass

    # -- definitions --------------------------------------------------------

    def record_definitions(self, code: str, namespace: dict) -> None:
        """Append the top-level import/def/class statements whose names are now bound."""
        try:
            tree = ast.parse(code)
        except (SyntaxError, ValueError):  # ValueError: a NUL byte, before Python 3.12
            return
        kept = []
        for node in tree.body:
            if isinstance(node, DEFINITIONS) and all(n in namespace for n in _bound_names(node)):
                kept.append(ast.get_source_segment(code, node) or "")
        kept = [k for k in kept if k]
        if not kept:
            return
        ensure_private_dir(self.folder)
        existing = self._replay_chunks()
        chunks = [c for c in existing if c not in kept] + kept
        atomic_write(self.replay_path, json.dumps(chunks).encode())
        self._names_cache = None

    def _replay_chunks(self) -> list:
        try:
            with open(self.replay_path, "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return []
        except ValueError as exc:
            raise CheckpointError(
                f"the recorded definitions in {self.replay_path} are corrupt ({exc})",
                f"delete {self.replay_path}; the definitions will have to be run again",
            ) from None

    _names_cache = None

    def recorded_names(self) -> set:
        if self._names_cache is None:
            names = set()
            for chunk in self._replay_chunks():
                try:
                    for node in ast.parse(chunk).body:
                        names.update(_bound_names(node))
                except SyntaxError:
                    pass
            self._names_cache = names
        return self._names_cache

    # -- restoring ----------------------------------------------------------

    def restore(self, namespace: dict) -> dict:
        """Load definitions and variables into ``namespace``.

        Returns ``{"restored": [names], "not_restored": [{name, reason}]}``.
        """
        if not os.path.exists(self.manifest_path) and not os.path.exists(self.replay_path):
            return {"restored": [], "not_restored": []}
        check_trusted_dir(os.path.dirname(self.folder))
        check_trusted_dir(self.folder)
        failed_defs = self._replay(namespace, self._replay_chunks())
        manifest = self._load_manifest()
        restored, not_restored = [], []
        for name, entry in manifest["vars"].items():
            try:
                with open(os.path.join(self.folder, entry["file"]), "rb") as f:
                    namespace[name] = pickle.load(f)
                restored.append(name)
            except Exception as exc:
                not_restored.append({"name": name, "reason": f"could not be loaded ({type(exc).__name__}: {exc})"})
        failed_defs = self._replay(namespace, failed_defs)  # definitions that needed restored variables
        for chunk, exc in failed_defs:
            first = chunk.splitlines()[0][:120]
            not_restored.append({"name": first, "reason": f"replaying it failed ({type(exc).__name__}: {exc})"})
        for name, reason in manifest.get("dropped", {}).items():
            if name not in namespace:
                not_restored.append({"name": name, "reason": reason})
        self.manifest = {"vars": {n: e for n, e in manifest["vars"].items() if n in namespace}, "dropped": {}}
        for name in restored:
            self._seen[name] = _Seen(namespace[name], self.manifest["vars"][name]["digest"])
        return {"restored": sorted(restored), "not_restored": not_restored}

    def _replay(self, namespace: dict, chunks) -> list:
        failed = []
        for item in chunks:
            chunk = item[0] if isinstance(item, tuple) else item
            try:
                exec(compile(chunk, "<replayed definitions>", "exec"), namespace)
            except Exception as exc:
                failed.append((chunk, exc))
        return failed

    def _load_manifest(self) -> dict:
        try:
            with open(self.manifest_path, "rb") as f:
                manifest = json.loads(f.read())
            if not isinstance(manifest.get("vars"), dict):
                raise ValueError("no 'vars' table")
            return manifest
        except FileNotFoundError:
            return {"vars": {}, "dropped": {}}
        except (ValueError, AttributeError) as exc:
            raise CheckpointError(
                f"the checkpoint manifest {self.manifest_path} is corrupt ({exc})",
                f"move the folder {self.folder} aside to start with an empty namespace; "
                "the input and the ledger are not affected",
            ) from None


def touched_objects(code, namespace):
    """Ids of the objects ``code`` names, or None when it may reach anything.

    None (check everything) when the code cannot be parsed, calls a function
    or class defined in the REPL (it may mutate globals), or uses reflection.
    """
    if code is None:
        return None
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return None
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Call) and _may_reach_globals(node.func, namespace):
            return None
    return {id(namespace[n]) for n in names if n in namespace}


def _may_reach_globals(func, namespace) -> bool:
    if isinstance(func, ast.Lambda):
        return True
    if isinstance(func, ast.Attribute):
        owner = namespace.get(func.value.id) if isinstance(func.value, ast.Name) else None
        return owner is not None and type(owner).__module__ == "__main__"
    if isinstance(func, ast.Name):
        if func.id in REFLECTIVE:
            return True
        target = namespace.get(func.id)
        return getattr(target, "__module__", None) == "__main__" and callable(target)
    return True  # a call on a call or a subscript: cannot tell what it is


def _untouched(seen: _Seen, touched) -> bool:
    return (seen.fingerprint is not None and touched is not None and touched.isdisjoint(seen.reachable)
            and fingerprint(seen.value) == seen.fingerprint)


def fingerprint(value):
    """Type, length and the identity of a few elements: cheap, and changes with most mutations."""
    try:
        if isinstance(value, dict):
            keys = list(itertools.islice(value, 8)) + list(itertools.islice(reversed(value), 8))
            return type(value), len(value), tuple(id(value[k]) for k in keys), tuple(map(id, keys))
        if isinstance(value, (list, collections.deque)):
            n = len(value)
            return type(value), n, tuple(id(value[i]) for i in (*range(min(n, 8)), *range(max(0, n - 8), n)))
        return type(value), _length(value), id(value)
    except Exception:
        return None


def _bound_names(node) -> list:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in node.names if a.name != "*"]
    return [node.name]


def _length(value):
    try:
        return len(value)
    except Exception:
        return -1
