"""Helpers injected into the REPL namespace: ``peek``, ``grep``, ``chunks``, ``SHOW_VARS``.

They let the model look at the input without printing it whole. make_helpers()
binds them to zero-argument getters instead of values, so they always work on
the input as bound (even after the user rebinds ``context``) and see the live
namespace.

Everything here is written for gigabyte inputs: grep runs one compiled regex
over the text and counts newlines only in the gaps between matches
(``str.count("\\n", a, b)``), and chunks looks for a cut with ``rfind`` near
each boundary; nothing ever splits the whole input into lines.

The docstrings are the manual: ``help(grep)`` is how the model learns a helper.
"""
from __future__ import annotations

import re
import sys
import types
from bisect import bisect_right
from dataclasses import dataclass, field

from .errors import InputError

LINE_CHARS = 300       # a grep line longer than this is shown as a window around the match
VARS_SHOWN = 100


def make_helpers(get_context, get_files, get_namespace) -> dict:
    """The helpers as a name -> function dict, bound to the three getters."""

    def peek(start=0, length=2000):
        """Return `length` characters of the input starting at offset `start`.

        A negative start counts from the end: peek(-3000) is the last 3,000
        characters. Offsets are those of `context` (and of grep matches'
        `.start`), so peek(max(0, m.start - 500), 1500) shows a match in its
        setting (the max() keeps a start near 0 from counting from the end).
        """
        _check_int("peek", "start", start)
        _check_int("peek", "length", length, minimum=0)
        text = get_context()
        if start < 0:
            start = max(0, len(text) + start)
        return text[start:start + length]

    def grep(pattern, *, flags=0, ignore_case=False, context=0, max_matches=100, file=None):
        """Find the lines of the input that match a regular expression.

        pattern      a regex string or compiled pattern (re.escape(s) for a literal).
                     `^` and `$` match at line starts and ends, as in the grep tool.
        ignore_case  match without regard to case (same as flags=re.IGNORECASE).
        context      lines of text to keep before and after each matching line.
        max_matches  matching lines to return (None: all). More are counted, not kept.
        file         search only the input files whose path is this, ends with
                     "/" + this, or (failing those) contains it; see context_files.

        Returns a list of GrepMatch, one per matching line (a match spanning
        lines counts for the line it starts on), in input order, with
          .line       1-based line number in `context`
          .file       the input file's path (None on a header line)
          .file_line  1-based line number within that file
          .text       the line (a window of ~300 characters around the match if longer)
          .match      the matched text;  .start / .end  its offsets in `context`
          .before / .after  the context lines
        Printing it shows one `path:line: text` per match. The list also has
        .total (all matching lines) and .truncated (total > what was kept).

        Example:  errs = grep(r"ERROR|FATAL", max_matches=20); print(errs.total); errs
        """
        text = get_context()
        regex = _compile(pattern, flags | (re.IGNORECASE if ignore_case else 0))
        _check_int("grep", "context", context, minimum=0)
        if max_matches is not None:
            _check_int("grep", "max_matches", max_matches, minimum=0)
        files = _FileIndex(get_files())
        regions = files.regions(file, len(text))
        return _grep(text, regex, regions, files, context, max_matches)

    def chunks(size=200_000, *, overlap=0, per_file=False):
        """Cut the input into pieces of at most `size` characters, at line ends.

        overlap   characters (whole lines) each chunk repeats from the end of the
                  previous one, so a record cut in two is seen whole once.
        per_file  True: no chunk spans two input files (each file is cut alone;
                  file headers are left out).
        A single line longer than `size` is cut hard.

        Returns a list of str; each also has .start and .end (its offsets in
        `context`) and .files (the paths of the input files it covers), e.g.
        prompts = [f"File {c.files[0]}:\\n{c}\\n\\nList the errors." for c in chunks(per_file=True)]

        Guidance: fat chunks, few calls. A Haiku sub-call reads 100k+ tokens
        comfortably and each call has a fixed cost, so prefer 200k-400k characters
        (about 50k-100k tokens) per chunk; narrow the input with grep first when
        only part of it matters.
        """
        _check_int("chunks", "size", size, minimum=1)
        _check_int("chunks", "overlap", overlap, minimum=0)
        if overlap >= size:
            raise InputError(f"chunks: overlap={overlap} must be smaller than size={size}",
                             "use an overlap of a few lines, e.g. overlap=2000")
        text = get_context()
        files = _FileIndex(get_files())
        regions = files.regions(None, len(text), per_file=per_file)
        out = []
        for lo, hi in regions:
            for a, b in _cuts(text, lo, hi, size, overlap):
                out.append(Chunk.make(text[a:b], a, b, files.overlapping(a, b)))
        return out

    def SHOW_VARS():
        """Print your variables: name, type and size (len() where it has one,
        else bytes from sys.getsizeof). Names starting with "_", modules and the
        built-in helpers are left out; at most 100 lines are shown."""
        _show_vars(get_namespace(), helpers)

    helpers = {"peek": peek, "grep": grep, "chunks": chunks, "SHOW_VARS": SHOW_VARS}
    for name, fn in helpers.items():
        fn.__qualname__ = name  # help() shows "grep(...)", not "make_helpers.<locals>.grep"
    return helpers


# ---------------------------------------------------------------- grep

@dataclass(repr=False)
class GrepMatch:
    """One matching line. repr: `path:file_line: text`, context lines with `-`."""

    line: int
    file: str | None
    file_line: int | None
    text: str
    match: str
    start: int
    end: int
    before: list = field(default_factory=list)
    after: list = field(default_factory=list)

    def _where(self, delta: int, sep: str) -> str:
        if self.file is None:
            return f"line {self.line + delta}{sep}"
        return f"{self.file}{sep}{self.file_line + delta}{sep}"

    def __repr__(self):
        n = len(self.before)
        rows = [f"{self._where(i - n, '-')} {t}" for i, t in enumerate(self.before)]
        rows.append(f"{self._where(0, ':')} {self.text}")
        rows += [f"{self._where(i + 1, '-')} {t}" for i, t in enumerate(self.after)]
        return "\n".join(rows)

    __str__ = __repr__


class GrepResult(list):
    """A list of GrepMatch with .pattern, .total and .truncated."""

    def __init__(self, matches=(), *, pattern="", total=0):
        super().__init__(matches)
        self.pattern = pattern
        self.total = total
        self.truncated = total > len(self)

    def __repr__(self):
        if not self.total:
            return f"(no line matches {self.pattern!r})"
        grouped = any(m.before or m.after for m in self)
        body = ("\n--\n" if grouped else "\n").join(map(repr, self))
        if self.truncated:
            body += (f"\n[{len(self):,} of {self.total:,} matching lines shown; "
                     "pass max_matches= for more, or narrow the pattern or file=]")
        return body.lstrip("\n")

    __str__ = __repr__


def _compile(pattern, flags: int):
    if isinstance(pattern, re.Pattern):
        flags |= pattern.flags
        pattern = pattern.pattern
    if not isinstance(pattern, str):
        raise InputError(f"grep: pattern must be a str or compiled regex, not {type(pattern).__name__}",
                         "pass e.g. r'ERROR \\d+'")
    try:
        return re.compile(pattern, flags | re.MULTILINE)
    except re.error as exc:
        raise InputError(f"grep: bad regular expression {pattern!r}: {exc}",
                         "fix the pattern, or search for text literally with re.escape(text)") from None


def _grep(text: str, regex, regions: list, files, context: int, max_matches) -> GrepResult:
    lines = _LineCounter(text)
    kept, total = [], 0
    for lo, hi in regions:
        for m, eol in _line_matches(text, regex, lo, lo, hi):
            if max_matches is not None and len(kept) >= max_matches:
                total += 1 + _count_line_matches(text, regex, _next_pos(m, eol), lo, hi)
                break
            total += 1
            kept.append(_record(text, m, eol, lo, hi, lines, files, context))
    return GrepResult(kept, pattern=regex.pattern, total=total)


def _line_matches(text: str, regex, pos: int, lo: int, hi: int):
    """(match, end of its line) for each matching line of text[pos:hi], one per line."""
    while pos < hi:
        m = regex.search(text, pos, hi)
        if m is None:
            return
        s = m.start()
        if s == hi and (s == lo or text[s - 1] == "\n"):
            return  # an empty match after the last newline is not a line
        eol = text.find("\n", s, hi)
        eol = hi if eol < 0 else eol
        yield m, eol
        pos = _next_pos(m, eol)


def _next_pos(m, eol: int) -> int:
    """Where to search after a matching line: the next line, or the match's end
    when the match ran past its line."""
    return max(eol + 1, m.end())


def _count_line_matches(text: str, regex, pos: int, lo: int, hi: int) -> int:
    """The rule of _line_matches, only counting: a tight loop for the matches
    past max_matches, which may be millions."""
    search, find = regex.search, text.find
    count = 0
    while pos < hi:
        m = search(text, pos, hi)
        if m is None:
            break
        s = m.start()
        if s == hi and (s == lo or text[s - 1] == "\n"):
            break
        count += 1
        eol = find("\n", s, hi)
        if eol < 0:
            break
        pos = eol + 1
        if m.end() > pos:
            pos = m.end()
    return count


def _record(text, m, eol, lo, hi, lines, files, context) -> GrepMatch:
    s = m.start()
    bol = text.rfind("\n", lo, s) + 1 or lo
    path, first_line = files.locate(bol, lines)  # before line_at(bol): the counter only moves forward
    line = lines.line_at(bol)
    return GrepMatch(
        line=line, file=path, file_line=None if path is None else line - first_line + 1,
        text=_window(text, bol, eol, s), match=m.group()[:LINE_CHARS], start=s, end=m.end(),
        before=_lines_before(text, bol, lo, context), after=_lines_after(text, eol, hi, context),
    )


class _LineCounter:
    """Line number at an offset, counting newlines only since the last question
    (matches come in order, so the whole scan counts each newline about once)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def line_at(self, pos: int) -> int:
        if pos >= self.pos:
            self.line += self.text.count("\n", self.pos, pos)
        else:
            self.line -= self.text.count("\n", pos, self.pos)
        self.pos = pos
        return self.line


class _FileIndex:
    """context_files sorted by start, for finding the file an offset is in."""

    def __init__(self, files):
        self.files = sorted(files or [], key=lambda f: f["start"])
        self.starts = [f["start"] for f in self.files]
        self.first_lines = {}

    def regions(self, name, length: int, per_file: bool = False) -> list:
        if name is None and not (per_file and self.files):
            return [(0, length)]
        chosen = self.files if name is None else self.select(name)
        return [(f["start"], f["end"]) for f in chosen]

    def select(self, name) -> list:
        paths = [f["path"] for f in self.files]
        for test in (lambda p: p == name, lambda p: p.endswith("/" + str(name)), lambda p: str(name) in p):
            chosen = [f for f in self.files if test(f["path"])]
            if chosen:
                return chosen
        raise InputError(f"grep: no input file matches file={name!r}",
                         f"input files are e.g. {paths[:5]!r}; see context_files")

    def find(self, pos: int) -> int | None:
        i = bisect_right(self.starts, pos) - 1
        if i >= 0 and pos < self.files[i]["end"]:
            return i
        return None

    def locate(self, bol: int, lines: _LineCounter) -> tuple:
        """(path, line number of the file's first line) for the line starting at bol."""
        i = self.find(bol)
        if i is None:
            return None, None
        if i not in self.first_lines:
            self.first_lines[i] = lines.line_at(self.files[i]["start"])
        return self.files[i]["path"], self.first_lines[i]

    def overlapping(self, a: int, b: int) -> list:
        i = max(0, bisect_right(self.starts, a) - 1)
        out = []
        while i < len(self.files) and self.files[i]["start"] < b:
            f = self.files[i]
            if f["end"] > a:
                out.append(f["path"])
            i += 1
        return out


def _cut_line(line: str) -> str:
    line = line[:-1] if line.endswith("\r") else line
    return line if len(line) <= LINE_CHARS else line[:LINE_CHARS] + "…"


def _window(text: str, bol: int, eol: int, s: int) -> str:
    if eol - bol <= LINE_CHARS:
        return _cut_line(text[bol:eol])
    a = max(bol, s - LINE_CHARS // 3)
    b = min(eol, a + LINE_CHARS)
    return ("…" if a > bol else "") + text[a:b].rstrip("\r") + ("…" if b < eol else "")


def _lines_before(text: str, bol: int, lo: int, n: int) -> list:
    out = []
    while n > 0 and bol > lo:
        start = text.rfind("\n", lo, bol - 1) + 1 or lo
        out.append(_cut_line(text[start:bol - 1]))
        bol, n = start, n - 1
    return out[::-1]


def _lines_after(text: str, eol: int, hi: int, n: int) -> list:
    out, start = [], eol + 1
    while n > 0 and start < hi:
        end = text.find("\n", start, hi)
        end = hi if end < 0 else end
        out.append(_cut_line(text[start:end]))
        start, n = end + 1, n - 1
    return out


# ---------------------------------------------------------------- chunks

class Chunk(str):
    """A piece of the input: a str that also knows .start, .end and .files."""

    @classmethod
    def make(cls, text: str, start: int, end: int, files: list) -> Chunk:
        chunk = cls(text)
        chunk.start, chunk.end, chunk.files = start, end, files
        return chunk


def _cuts(text: str, lo: int, hi: int, size: int, overlap: int) -> list:
    """(start, end) pieces of text[lo:hi], at most size long, each ending after a
    newline when it holds one, consecutive pieces sharing up to overlap characters."""
    out, pos, done = [], lo, lo  # done: where the last piece ended
    while done < hi:
        end = min(pos + size, hi)
        nl = -1 if end == hi else text.rfind("\n", pos, end)
        cut = end if nl < 0 else nl + 1  # no newline: one line longer than size, cut hard
        if cut <= done:
            pos = done  # the overlap left no room for a new line: no overlap at this cut
            continue
        out.append((pos, cut))
        done = cut
        pos = _overlap_start(text, pos, cut, overlap, aligned=nl >= 0)
    return out


def _overlap_start(text: str, pos: int, cut: int, overlap: int, aligned: bool) -> int:
    """Where the piece after [pos, cut) starts: at most overlap back, at a line start."""
    nxt = cut - overlap
    if not overlap or nxt <= pos:
        return cut
    if aligned and text[nxt - 1] != "\n":
        j = text.find("\n", nxt, cut)
        nxt = cut if j < 0 else j + 1
    return nxt


# ---------------------------------------------------------------- SHOW_VARS

def _show_vars(namespace: dict, helpers: dict) -> None:
    rows = [(name, type(value).__name__, _size(value))
            for name, value in sorted(namespace.items(), key=lambda item: item[0])
            if not _hidden(name, value, helpers)]
    if not rows:
        print("(no variables yet)")
        return
    w_name = max(len(r[0]) for r in rows[:VARS_SHOWN])
    w_type = max(len(r[1]) for r in rows[:VARS_SHOWN])
    for name, tname, size in rows[:VARS_SHOWN]:
        print(f"{name:<{w_name}}  {tname:<{w_type}}  {size}")
    if len(rows) > VARS_SHOWN:
        print(f"... and {len(rows) - VARS_SHOWN} more")


def _hidden(name: str, value, helpers: dict) -> bool:
    if name.startswith("_") or isinstance(value, types.ModuleType):
        return True
    if any(value is h for h in helpers.values()):
        return True
    # The other functions rlm injects (llm_query, FINAL, ...) live in rlmcore.
    return callable(value) and str(getattr(value, "__module__", "") or "").startswith("rlmcore")


def _size(value) -> str:
    try:
        return f"len {len(value):,}"
    except Exception:
        pass
    try:
        return f"{sys.getsizeof(value):,} bytes"
    except Exception:
        return "?"


def _check_int(helper: str, name: str, value, minimum=None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{helper}: {name} must be an int, not {value!r}", f"pass e.g. {name}=1000")
    if minimum is not None and value < minimum:
        raise InputError(f"{helper}: {name}={value} must be at least {minimum}", f"pass {name}>={minimum}")
