"""Binding the user's files and folders to ``context`` and ``context_files``.

bind_inputs() runs once inside the session worker, at start and on every
restart, so it must be deterministic and cheap: about the time of reading and
decoding each file once.

Order. Inputs are taken in the order given. A folder is walked depth first with
os.scandir, each folder's entries sorted by name, so its files come out sorted
by path components (``a/x`` before ``a-b``) with no final sort. File types come
from the directory entry (d_type); no file is stat'ed except through the fstat
of the open file, which also gives the (device, inode) key that reads each file
once even when it is reached twice (overlapping inputs, symlinks, hard links).

Globs. ``--glob`` patterns select files inside folder inputs only; a file
given directly as ``--input`` is always read. A pattern is matched against the
file's path relative to the folder given as input, with ``/`` separators, case
sensitively, and must match the whole path:

* ``*`` matches any run of characters except ``/``, ``?`` one character except
  ``/``, ``[abc]``/``[a-z]``/``[!abc]`` one character of (or not of) a set,
  ``\\x`` the character x itself. ``*`` also matches a leading dot.
* ``**`` as a whole path segment matches any number of folders, zero included:
  ``src/**/*.py`` matches ``src/a.py`` and ``src/x/y/b.py``; ``**/*.py`` every
  .py file; a trailing ``/**`` (or a trailing ``/``) everything below.
  ``**`` inside a segment (``a**b``) is a plain ``*``.
* A pattern without ``/`` matches only the top level: ``*.log`` matches
  ``a.log`` but not ``logs/b.log`` (use ``**/*.log``). A leading ``./`` is
  ignored. A file is read when any pattern matches it.

Skips. Nothing is left out silently: every file or folder not read is in
``skipped`` with a reason. Inside an input folder these folders are skipped,
each reported once with its file count and how to include it:

* version control: ``.git``, ``.hg``, ``.svn``;
* dependencies and virtual environments: ``node_modules``, ``.venv``,
  ``venv``, and any folder holding a ``pyvenv.cfg`` (so ``env`` is skipped
  when it is a virtual environment and read like any folder otherwise);
* caches: ``__pycache__``, ``.pytest_cache``, ``.mypy_cache``, ``.ruff_cache``,
  ``.tox``, ``.cache``;
* build output: ``build``, ``dist``, ``target``, ``.next``, ``*.egg-info``.
  A ``build`` folder with source files (.py, .c, .js, ...) at its top level
  holds code, not output: it is read, with a warning saying so.

A skipped folder is read anyway when a ``--glob`` names it literally
(``node_modules/lodash/*.js``), and a folder given itself as ``--input`` is
always read. Files are skipped as ``binary`` (a NUL byte in the first 8 KiB,
or more than 30% of it control bytes or invalid UTF-8), unreadable
(permission denied, ...), not regular (socket, fifo, device), symlink loops
and broken symlinks, and files already read through another path. Files that
no ``--glob`` matches are counted in one entry per folder.

Text. Files are decoded as UTF-8, a UTF-8 byte order mark dropped. Invalid
UTF-8 is decoded with replacement characters and a warning names the file;
a UTF-16 file (byte order mark) is decoded as UTF-16 with a warning.

Layout. One file: ``context`` is exactly its text. Several files: each
file's text follows a one-line header ``=== FILE: path (N bytes) ===`` (N the
size on disk) and, when the text does not end with a newline, is followed by
one; ``context_files[i]["start"]:["end"]`` spans the text alone. Paths are
relative to cwd when under it, else absolute. One file's text *is* the context
(no copy); several are joined once from a list of parts.
"""
from __future__ import annotations

import codecs
import errno
import os
import re
import stat
from dataclasses import dataclass, field

from .errors import InputError
from .paths import rlm_home

SAMPLE_BYTES = 8192          # what the binary check looks at
BINARY_RATIO = 0.30          # share of bad bytes in the sample that makes a file binary
COUNT_CAP = 10_000           # files counted in a skipped folder before saying "over"
SKIPPED_CAP = 200            # entries of skipped/warnings shown by summary()
PREVIEW_CHARS = 1500
FILES_PREVIEW = 20
HEADER = "=== FILE: {path} ({nbytes} bytes) ===\n"

_INCLUDE_HINT = "pass it as its own --input to include it"
_SKIP_NAMES = {
    ".git": "version control folder",
    ".hg": "version control folder",
    ".svn": "version control folder",
    "node_modules": "dependencies folder",
    ".venv": "virtual environment folder",
    "venv": "virtual environment folder",
    "__pycache__": "cache folder",
    ".pytest_cache": "cache folder",
    ".mypy_cache": "cache folder",
    ".ruff_cache": "cache folder",
    ".tox": "cache folder",
    ".cache": "cache folder",
    "build": "build output folder",
    "dist": "build output folder",
    "target": "build output folder",
    ".next": "build output folder",
}
_SOURCE_EXTS = frozenset(
    ".py .pyi .pyx .c .h .cc .cpp .cxx .hpp .js .mjs .cjs .ts .tsx .jsx .go .rs "
    ".java .kt .scala .rb .php .cs .swift .m .lua .pl .sh".split()
)
# Bytes below 0x20 that plain text does not contain (tab, newlines, form feed,
# backspace and escape are common in logs and are not counted).
_CONTROL_BYTES = bytes(b for b in range(32) if b not in b"\t\n\r\f\v\b\x1b")


@dataclass(repr=False)
class BoundInput:
    """The bound input: ``context``, ``context_files``, and what was left out."""

    context: str
    context_files: list
    skipped: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    lines: int = -1  # computed from context when not given

    def __post_init__(self):
        if self.lines < 0:
            self.lines = count_lines(self.context)

    def __repr__(self):
        return (f"BoundInput(files={len(self.context_files)}, chars={len(self.context)}, "
                f"skipped={len(self.skipped)}, warnings={len(self.warnings)})")

    def summary(self) -> dict:
        """The input part of the ``start`` JSON.

        ``bytes`` is what was read from disk; ``chars`` and ``lines`` are those
        of ``context`` (headers included), a last line without a newline
        counting as a line. ``est_tokens`` is only an estimate (chars / 4,
        rounded up); real tokenisation varies with the text. ``skipped`` and
        ``warnings`` are capped; the ``*_count`` fields give the full numbers.
        """
        chars = len(self.context)
        return {
            "files": len(self.context_files),
            "bytes": sum(f["bytes"] for f in self.context_files),
            "chars": chars,
            "lines": self.lines,
            "est_tokens": -(-chars // 4),
            "skipped": self.skipped[:SKIPPED_CAP],
            "skipped_count": len(self.skipped),
            "warnings": self.warnings[:SKIPPED_CAP],
            "warnings_count": len(self.warnings),
            "preview": self.context[:PREVIEW_CHARS],
            "files_preview": [{"path": f["path"], "bytes": f["bytes"]}
                              for f in self.context_files[:FILES_PREVIEW]],
        }


def count_lines(text: str) -> int:
    """Lines in text; a last line without a newline counts."""
    return text.count("\n") + (1 if text and not text.endswith("\n") else 0)


def bind_inputs(paths: list, globs: list | None = None, *, cwd: str | None = None) -> BoundInput:
    """Read files and folders into one BoundInput (see the module docstring)."""
    if not paths:
        raise InputError("no input given", "pass --input PATH (a file or a folder); repeat it for several")
    collector = _Collector(os.path.abspath(cwd or os.getcwd()), [Glob(g) for g in globs or []])
    for raw in paths:
        collector.add_input(raw)
    collector.glob_warnings()
    if not collector.files:
        raise InputError(
            f"nothing readable in the input {list(paths)!r}",
            "left out: " + _describe(collector.skipped) + "; pass text files or folders holding them",
            skipped=collector.skipped[:20],
        )
    context, files = _layout(collector.files)
    return BoundInput(context, files, collector.skipped, collector.warnings)


def _layout(read: list) -> tuple:
    """Build context and context_files from [(path, nbytes, text)]."""
    if len(read) == 1:
        path, nbytes, text = read[0]
        return text, [{"path": path, "start": 0, "end": len(text), "bytes": nbytes}]
    parts, files, pos = [], [], 0
    for path, nbytes, text in read:
        # A header is one line even when a file name holds a newline.
        header = HEADER.format(path=path.replace("\n", "\\n"), nbytes=nbytes)
        start = pos + len(header)
        parts += (header, text)
        files.append({"path": path, "start": start, "end": start + len(text), "bytes": nbytes})
        pos = start + len(text)
        if text and not text.endswith("\n"):
            parts.append("\n")
            pos += 1
    return "".join(parts), files


# ---------------------------------------------------------------- globs

class Glob:
    """One --glob pattern compiled to a regex over '/'-separated relative paths."""

    def __init__(self, pattern: str):
        if not isinstance(pattern, str) or not pattern.strip():
            raise InputError(f"empty --glob {pattern!r}", "give a pattern such as '**/*.py'")
        if pattern.startswith("/"):
            raise InputError(f"--glob {pattern!r} is absolute",
                             "globs are matched against paths relative to each input folder, e.g. 'src/**/*.py'")
        self.pattern = pattern
        body = pattern[2:] if pattern.startswith("./") else pattern
        if body.endswith("/"):
            body += "**"
        self.segments = [s for s in body.split("/") if s and s != "."]
        # DOTALL: a file name may hold a newline, and "**" must still match it.
        self.regex = re.compile(_glob_regex(self.segments), re.DOTALL)
        self.folders = re.compile(_folder_regex(self.segments, 0) + r"\Z", re.DOTALL)
        self.hits = 0

    def match(self, rel: str) -> bool:
        if self.regex.match(rel):
            self.hits += 1
            return True
        return False

    def reaches(self, rel: str) -> bool:
        """True when files below folder rel can match (other folders are not walked)."""
        return bool(self.folders.match(rel))

    def names_folder(self, rel: str) -> bool:
        """True when the pattern's literal leading segments reach into folder rel."""
        parts = rel.split("/")
        if len(self.segments) <= len(parts):
            return False
        return all(not _has_magic(s) and s == p for s, p in zip(self.segments, parts))


def _has_magic(segment: str) -> bool:
    return any(c in segment for c in "*?[\\")


def _glob_regex(segments: list) -> str:
    out = []
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        if seg == "**":
            out.append(".*" if last else "(?:[^/]*/)*")
        else:
            out.append(_segment_regex(seg) + ("" if last else "/"))
    return "".join(out) + r"\Z"


def _folder_regex(segments: list, i: int) -> str:
    """Folders a match can pass through: a leading run of the pattern's folder
    segments, and anything at all once a ``**`` is reached."""
    if i >= len(segments) or (i == len(segments) - 1 and segments[i] != "**"):
        return "(?!)" if i == 0 else ""  # a top-level pattern enters no folder
    if segments[i] == "**":
        return ".*"
    rest = _folder_regex(segments, i + 1)
    return _segment_regex(segments[i]) + (f"(?:/{rest})?" if rest else "")


def _segment_regex(seg: str) -> str:
    out, i = [], 0
    while i < len(seg):
        c = seg[i]
        if c == "*":
            while i < len(seg) and seg[i] == "*":
                i += 1
            out.append("[^/]*")
            continue
        if c == "?":
            out.append("[^/]")
        elif c == "\\" and i + 1 < len(seg):
            i += 1
            out.append(re.escape(seg[i]))
        elif c == "[":
            neg = seg[i + 1:i + 2] in ("!", "^")
            first = i + 1 + neg
            end = seg.find("]", first + 1)  # a "]" first in the set is a member, as in the shell
            if end < 0:
                out.append(re.escape(c))
            else:
                body = "".join("\\" + ch if ch in "\\[]^" else ch for ch in seg[first:end])
                out.append(f"(?!/)[{'^' if neg else ''}{body}]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


# ---------------------------------------------------------------- walking

@dataclass
class _Dir:
    path: str                 # absolute path as reached (symlinks kept)
    rel: str                  # relative to the input folder, '/'-separated; "" for the input itself
    ancestors: tuple          # real paths of this folder and every folder above it in the walk


@dataclass
class _File:
    path: str
    rel: str


class _Collector:
    def __init__(self, cwd: str, globs: list):
        self.cwd = cwd
        self.globs = globs
        self.files = []       # [(display path, bytes on disk, text)]
        self.skipped = []
        self.warnings = []
        self.seen = {}        # (st_dev, st_ino) -> display path of the file read
        self.folder_inputs = 0
        self.pruned = 0       # folders of the current input no glob can reach
        # RLM_HOME holds session keys and everything sessions wrote: never part of an input.
        self.rlm_home = os.path.realpath(rlm_home(create=False))

    # -- paths
    def display(self, path: str) -> str:
        if path == self.cwd:
            return "."
        if path.startswith(self.cwd.rstrip(os.sep) + os.sep):
            return os.path.relpath(path, self.cwd)
        return path

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "reason": reason})

    # -- inputs
    def add_input(self, raw: str) -> None:
        path = os.path.abspath(os.path.join(self.cwd, os.path.expanduser(str(raw))))
        if not os.path.lexists(path):
            raise InputError(f"input path {raw!r} does not exist",
                             f"check the spelling; relative paths are resolved against {self.cwd}")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise InputError(f"input path {raw!r} cannot be used: {_why(exc)}",
                             "pass a readable file or folder") from None
        display = self.display(path)
        if stat.S_ISDIR(st.st_mode):
            self.add_folder(raw, path, display)
        elif stat.S_ISREG(st.st_mode):
            self.read_file(path, display)      # a file named directly is read whatever the globs
        else:
            self.skip(display, _special_kind(st.st_mode))

    def add_folder(self, raw: str, root: str, display: str) -> None:
        self.folder_inputs += 1
        first_skip = len(self.skipped)
        matched = unmatched = self.pruned = 0
        stack = [_Dir(root, "", (os.path.realpath(root),))]
        while stack:
            item = stack.pop()
            if isinstance(item, _Dir):
                stack.extend(reversed(self.scan(item, display)))
            elif self.globs and not any([g.match(item.rel) for g in self.globs]):
                unmatched += 1
            else:
                matched += 1
                self.read_file(item.path, _join(display, item.rel))
        left = [f"{_plural(unmatched, 'file')} matched no --glob"] if unmatched else []
        if self.pruned:
            left.append(f"{_plural(self.pruned, 'folder')} not walked, as no --glob can match in them")
        if left:
            self.skip(display, f"{' and '.join(left)} ({_globs_text(self.globs)})")
        if not matched:
            what = f" matching --glob {_globs_text(self.globs)}" if self.globs else ""
            raise InputError(
                f"folder {raw!r} has no file to read{what}",
                "left out: " + _describe(self.skipped[first_skip:])
                + ("; a --glob without '/' matches only the folder's top level: use '**/*.ext' for any depth"
                   if self.globs else ""),
                skipped=self.skipped[first_skip:first_skip + 20],
            )

    def scan(self, folder: _Dir, display_root: str) -> list:
        """The folder's children to walk, in name order; skips recorded on the way."""
        display = _join(display_root, folder.rel)
        try:
            with os.scandir(folder.path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.skip(display, f"unreadable folder: {_why(exc)}")
            return []
        if folder.rel:  # the input folder itself was asked for: never skipped
            reason = self.folder_skip_reason(folder, entries, display)
            if reason:
                self.skip(display, reason)
                return []
        children = []
        for entry in entries:
            rel = f"{folder.rel}/{entry.name}" if folder.rel else entry.name
            child = self.child(folder, entry, rel, _join(display_root, rel))
            if child is not None:
                children.append(child)
        return children

    def child(self, folder: _Dir, entry, rel: str, display: str):
        try:
            if entry.is_dir():
                if self.globs and not any(g.reaches(rel) for g in self.globs):
                    self.pruned += 1  # no glob can match below it: counted in the input's entry
                    return None
                if entry.is_symlink():
                    return self.follow_link(folder, entry, rel, display)
                return _Dir(entry.path, rel, folder.ancestors + (os.path.join(folder.ancestors[-1], entry.name),))
            if entry.is_file():
                return _File(entry.path, rel)
            self.skip(display, _special_reason(entry))
        except OSError as exc:
            self.skip(display, "symlink loop" if exc.errno == errno.ELOOP else f"unreadable: {_why(exc)}")
        return None

    def follow_link(self, folder: _Dir, entry, rel: str, display: str):
        """A symlinked folder is walked unless it loops or points inside the input."""
        target = os.path.realpath(entry.path)
        if any(_within(a, target) for a in folder.ancestors):
            self.skip(display, f"symlink loop: points back to its enclosing folder {target}")
            return None
        root = folder.ancestors[0]
        if _within(target, root):
            self.skip(display, f"symlink to {os.path.relpath(target, root)}, "
                               "a folder inside this input, read there (or skipped) already")
            return None
        return _Dir(entry.path, rel, folder.ancestors + (target,))

    def folder_skip_reason(self, folder: _Dir, entries: list, display: str) -> str | None:
        if folder.ancestors[-1] == self.rlm_home:
            return "rlm's own folder (RLM_HOME: session keys, checkpoints, ledgers); never read"
        name = folder.rel.rsplit("/", 1)[-1]
        detail = ""
        if any(e.name == "pyvenv.cfg" for e in entries):
            kind, detail = "virtual environment folder", "has pyvenv.cfg, "
        elif name in _SKIP_NAMES:
            kind = _SKIP_NAMES[name]
        elif name.endswith(".egg-info"):
            kind = "build output folder"
        else:
            return None
        if any(g.names_folder(folder.rel) for g in self.globs):
            return None
        if name == "build" and kind == "build output folder":
            sources = sorted({os.path.splitext(e.name)[1] for e in entries
                              if os.path.splitext(e.name)[1] in _SOURCE_EXTS and e.is_file()})
            if sources:
                self.warnings.append(f"{display}: named like build output but holds source files "
                                     f"({', '.join(sources)}) at its top level, so it was read")
                return None
        return f"{kind} ({detail}{_count_files(entries)}); {_INCLUDE_HINT}"

    # -- files
    def read_file(self, path: str, display: str) -> None:
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_dev, st.st_ino)
                if key in self.seen:
                    self.skip(display, f"same file as {self.seen[key]}, read once")
                    return
                data = f.read()
        except OSError as exc:
            self.skip(display, f"unreadable: {_why(exc)}")
            return
        text = decode(data, display, self.warnings)
        if text is None:
            self.skip(display, "binary")
            return
        self.seen[key] = display
        if not data:
            self.warnings.append(f"{display}: empty file (0 bytes)")
        self.files.append((display, len(data), text))

    def glob_warnings(self) -> None:
        if self.globs and not self.folder_inputs:
            self.warnings.append("--glob selects files inside folder inputs only; "
                                 "files given directly as --input are always read")
        elif self.folder_inputs:
            for g in self.globs:
                if not g.hits:
                    self.warnings.append(f"--glob {g.pattern!r} matched no file")


# ---------------------------------------------------------------- text

def decode(data: bytes, display: str, warnings: list) -> str | None:
    """The text of a file's bytes, or None when the content is binary."""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        warnings.append(f"{display}: UTF-16 text (byte order mark), decoded as UTF-16")
        return data.decode("utf-16", "replace")
    if looks_binary(data[:SAMPLE_BYTES]):
        return None
    skip = 3 if data.startswith(codecs.BOM_UTF8) else 0
    view = memoryview(data)[skip:]  # drops the BOM without copying the bytes
    try:
        return str(view, "utf-8")
    except UnicodeDecodeError as exc:
        text = str(view, "utf-8", "replace")
        replaced = text.count("\ufffd") - data.count(codecs.encode("\ufffd", "utf-8"))
        warnings.append(f"{display}: invalid UTF-8 (first at byte {exc.start + skip}), decoded with "
                        f"replacement ({_plural(replaced, 'character')} replaced by U+FFFD)")
        return text


def looks_binary(sample: bytes) -> bool:
    """A NUL byte, or more than BINARY_RATIO of control bytes and invalid UTF-8."""
    if b"\0" in sample:
        return True
    if not sample:
        return False
    bad = len(sample) - len(sample.translate(None, _CONTROL_BYTES))
    try:
        codecs.utf_8_decode(sample, "strict", False)  # False: a character cut at the end is fine
    except UnicodeDecodeError:
        bad += codecs.utf_8_decode(sample, "replace", False)[0].count("\ufffd")
    return bad > len(sample) * BINARY_RATIO


# ---------------------------------------------------------------- small helpers

def _within(path: str, folder: str) -> bool:
    """path is folder or below it (both real paths)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _join(display_root: str, rel: str) -> str:
    if not rel:
        return display_root
    return rel if display_root == "." else f"{display_root}/{rel}"


def _count_files(entries: list) -> str:
    """'N files' below a skipped folder, without following symlinks, capped."""
    count, folders = 0, []
    for entry in entries:
        count += not _tally(entry, folders)
    while folders and count <= COUNT_CAP:
        try:
            with os.scandir(folders.pop()) as it:
                for entry in it:
                    count += not _tally(entry, folders)
        except OSError:
            continue
    return f"over {COUNT_CAP:,} files" if count > COUNT_CAP else _plural(count, "file")


def _tally(entry, folders: list) -> bool:
    try:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.path)
            return True
    except OSError:
        pass
    return False


def _special_reason(entry) -> str:
    if entry.is_symlink():
        try:
            os.stat(entry.path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "symlink loop"
            if exc.errno == errno.ENOENT:
                return f"broken symlink (target {os.readlink(entry.path)!r} does not exist)"
            return f"unreadable symlink: {_why(exc)}"
    return _special_kind(entry.stat(follow_symlinks=True).st_mode)


def _special_kind(mode: int) -> str:
    if stat.S_ISSOCK(mode):
        return "not a regular file: socket"
    if stat.S_ISFIFO(mode):
        return "not a regular file: named pipe (fifo)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "not a regular file: device"
    return "not a regular file"


def _why(exc: OSError) -> str:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "symlink loop"
    return exc.strerror or str(exc)


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _globs_text(globs: list) -> str:
    return ", ".join(repr(g.pattern) for g in globs)


def _describe(skipped: list, limit: int = 5) -> str:
    if not skipped:
        return "nothing (the folder is empty)"
    shown = "; ".join(f"{s['path']} ({s['reason']})" for s in skipped[:limit])
    more = len(skipped) - limit
    return shown + (f"; and {more} more" if more > 0 else "")
