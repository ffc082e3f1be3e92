"""The REPL helpers: peek, grep, chunks, SHOW_VARS."""
from __future__ import annotations

import os
import pickle
import re

import pytest

from rlmcore.errors import InputError
from rlmcore.helpers import make_helpers
from rlmcore.inputs import bind_inputs


def helpers_for(text, files=None, namespace=None):
    files = files if files is not None else [{"path": "app.log", "start": 0, "end": len(text), "bytes": len(text)}]
    namespace = namespace if namespace is not None else {}
    return make_helpers(lambda: text, lambda: files, lambda: namespace)


def bound_helpers(tmp_path, contents):
    for rel, data in contents.items():
        with open(os.path.join(str(tmp_path), rel), "w") as f:
            f.write(data)
    bound = bind_inputs(list(contents), cwd=str(tmp_path))
    return bound, make_helpers(lambda: bound.context, lambda: bound.context_files, lambda: {})


# ---------------------------------------------------------------- peek

def test_peek_returns_a_window_and_a_negative_start_counts_from_the_end():
    h = helpers_for("0123456789")
    assert h["peek"]() == "0123456789"
    assert h["peek"](2, 3) == "234"
    assert h["peek"](-3) == "789"
    assert h["peek"](-100, 2) == "01"
    assert h["peek"](50) == ""
    with pytest.raises(InputError):
        h["peek"](0, -1)


def test_helpers_keep_the_bound_input_when_the_user_rebinds_context():
    namespace = {"context": "bound text\n"}
    h = make_helpers(lambda: "bound text\n", lambda: [], lambda: namespace)
    namespace["context"] = "something else"
    assert h["peek"](0, 5) == "bound"
    assert h["grep"]("text")[0].line == 1


# ---------------------------------------------------------------- grep

def test_grep_numbers_lines_from_one_including_the_first_and_last_line():
    text = "ERROR first\nok\nok\nERROR last"
    found = helpers_for(text)["grep"]("ERROR")
    assert [(m.line, m.file_line, m.text) for m in found] == [(1, 1, "ERROR first"), (4, 4, "ERROR last")]
    assert [m.start for m in found] == [0, 18]
    assert repr(found) == "app.log:1: ERROR first\napp.log:4: ERROR last"
    assert found.total == 2 and not found.truncated


def test_grep_gives_the_line_within_each_file_across_many_files(tmp_path):
    bound, h = bound_helpers(tmp_path, {"a.log": "x\nhit a2\n", "b.log": "hit b1\ny\nhit b3"})
    found = h["grep"]("hit")
    assert [(m.file, m.file_line) for m in found] == [("a.log", 2), ("b.log", 1), ("b.log", 3)]
    for m in found:  # .line is the line in context
        assert bound.context.split("\n")[m.line - 1].startswith("hit")
    assert [m.file for m in h["grep"]("hit", file="b.log")] == ["b.log", "b.log"]
    header = h["grep"]("=== FILE: b.log")[0]
    assert header.file is None and repr(header).startswith("line 4: ===")


def test_grep_reports_one_record_per_line_and_anchors_at_line_starts():
    h = helpers_for("aaa\nbab\nccc\n")
    assert [m.line for m in h["grep"]("a")] == [1, 2]
    assert [m.line for m in h["grep"]("^b")] == [2]
    assert [m.line for m in h["grep"]("^")] == [1, 2, 3]  # no phantom line after the last newline
    assert [m.line for m in h["grep"]("c$")] == [3]


def test_grep_caps_matches_but_counts_them_all():
    h = helpers_for("".join(f"line {i}\n" for i in range(1000)))
    found = h["grep"](r"line \d+", max_matches=10)
    assert len(found) == 10 and found.total == 1000 and found.truncated
    assert repr(found).endswith("[10 of 1,000 matching lines shown; "
                                "pass max_matches= for more, or narrow the pattern or file=]")
    assert len(h["grep"]("line", max_matches=None)) == 1000


@pytest.mark.parametrize("pattern", ["a", "^", "$", "x*", "a\\nb", "b$", "^$", r"\n"])
def test_grep_counts_the_same_lines_past_the_cap_as_it_keeps(pattern):
    text = "a\nb a\n\nab\na\nb\nend"
    h = helpers_for(text)
    every = h["grep"](pattern, max_matches=None)
    for cap in (0, 1, 2):
        assert h["grep"](pattern, max_matches=cap).total == every.total == len(every)


def test_grep_keeps_context_lines_and_ignores_case():
    h = helpers_for("one\ntwo\nTHREE\nfour\nfive\n")
    m = h["grep"]("three", ignore_case=True, context=2)[0]
    assert (m.before, m.text, m.after) == (["one", "two"], "THREE", ["four", "five"])
    assert repr(m) == ("app.log-1- one\napp.log-2- two\napp.log:3: THREE\n"
                       "app.log-4- four\napp.log-5- five")
    assert h["grep"](re.compile("three", re.I))[0].line == 3


def test_grep_shows_a_window_of_a_very_long_line():
    h = helpers_for("x" * 10_000 + "NEEDLE" + "y" * 10_000)
    m = h["grep"]("NEEDLE")[0]
    assert "NEEDLE" in m.text and len(m.text) <= 302 and m.text.startswith("…")


def test_a_bad_regex_is_a_clear_error_naming_the_pattern():
    with pytest.raises(InputError) as exc:
        helpers_for("x")["grep"]("(unclosed")
    assert "'(unclosed'" in exc.value.message and "missing )" in exc.value.message
    with pytest.raises(InputError):
        helpers_for("x")["grep"]("x", file="nope.log")


def test_grep_results_survive_pickling_for_checkpoints():
    found = helpers_for("a\nb a\n")["grep"]("a", max_matches=1)
    again = pickle.loads(pickle.dumps(found))
    assert repr(again) == repr(found) and again.total == 2


# ---------------------------------------------------------------- chunks

def test_chunks_cut_at_line_ends_and_cover_the_text_exactly():
    text = "".join(f"line {i:04}\n" for i in range(100))  # 10 chars a line
    pieces = helpers_for(text)["chunks"](95)
    assert all(len(p) <= 95 and p.endswith("\n") for p in pieces)
    assert "".join(pieces) == text
    assert [len(p) for p in pieces[:2]] == [90, 90]
    assert pieces[1].start == 90 and pieces[1].end == 180 and pieces[1].files == ["app.log"]


def test_chunks_overlap_by_whole_lines():
    text = "".join(f"line {i:04}\n" for i in range(100))
    pieces = helpers_for(text)["chunks"](100, overlap=25)
    for a, b in zip(pieces, pieces[1:]):
        shared = a.end - b.start
        assert 0 < shared <= 25 and shared % 10 == 0
        assert text[b.start:a.end] == a[len(a) - shared:]
    assert pieces[0].start == 0 and pieces[-1].end == len(text)


def test_a_line_longer_than_the_size_is_cut_hard():
    text = "short\n" + "z" * 25 + "\nend\n"
    pieces = helpers_for(text)["chunks"](10)
    assert "".join(pieces) == text and all(len(p) <= 10 for p in pieces)
    assert pieces[:2] == ["short\n", "z" * 10]


def test_chunks_per_file_never_span_two_files(tmp_path):
    bound, h = bound_helpers(tmp_path, {"a.txt": "a1\na2\na3\n", "b.txt": "b1\nb2"})
    pieces = h["chunks"](7, per_file=True)
    assert pieces == ["a1\na2\n", "a3\n", "b1\nb2"]
    assert [p.files for p in pieces] == [["a.txt"], ["a.txt"], ["b.txt"]]
    whole = h["chunks"](1000)
    assert whole == [bound.context] and whole[0].files == ["a.txt", "b.txt"]


def test_chunk_arguments_are_checked():
    chunks = helpers_for("abc")["chunks"]
    for kwargs in ({"size": 0}, {"size": 10, "overlap": 10}, {"size": 10, "overlap": -1}, {"size": 2.5}):
        with pytest.raises(InputError):
            chunks(**kwargs)


# ---------------------------------------------------------------- SHOW_VARS

def test_show_vars_lists_user_variables_with_type_and_size(capsys):
    namespace = {"results": [1, 2, 3], "n": 7, "_private": 1, "os": os, "__builtins__": {}}
    h = helpers_for("x", namespace=namespace)
    namespace.update(h)
    assert h["SHOW_VARS"]() is None
    out = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in out] == [["n", "int"], ["results", "list"]]
    assert out[1].endswith("len 3") and out[0].endswith("bytes")


def test_show_vars_caps_its_output(capsys):
    namespace = {f"v{i:03}": i for i in range(150)}
    helpers_for("x", namespace=namespace)["SHOW_VARS"]()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 101 and out[-1] == "... and 50 more"


def test_every_helper_documents_itself():
    for name, fn in helpers_for("x").items():
        assert fn.__qualname__ == name and len(fn.__doc__) > 100
