"""Binding files and folders: offsets, order, globs, skip rules, decoding, errors, summary."""
from __future__ import annotations

import os
import socket

import pytest

from rlmcore.errors import InputError
from rlmcore.inputs import HEADER, Glob, bind_inputs


def write(root, rel, data):
    path = os.path.join(str(root), rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def reasons(bound):
    return {s["path"]: s["reason"] for s in bound.skipped}


def file_paths(bound):
    return [f["path"] for f in bound.context_files]


def assert_offsets_exact(bound, root):
    for f in bound.context_files:
        with open(os.path.join(str(root), f["path"]), "rb") as fh:
            raw = fh.read()
        assert bound.context[f["start"]:f["end"]] == raw.decode("utf-8")
        assert f["bytes"] == len(raw)


# ---------------------------------------------------------------- offsets and layout

def test_a_single_file_is_the_context_exactly(tmp_path):
    write(tmp_path, "app.log", "one\ntwo\nthree")
    bound = bind_inputs(["app.log"], cwd=str(tmp_path))
    assert bound.context == "one\ntwo\nthree"
    assert bound.context_files == [{"path": "app.log", "start": 0, "end": 13, "bytes": 13}]


def test_offsets_are_exact_for_many_files_with_and_without_final_newline(tmp_path):
    write(tmp_path, "a.txt", "alpha\n")
    write(tmp_path, "b.txt", "beta without newline")
    write(tmp_path, "c/d.txt", "caf\u00e9 \u2603\nsecond line\n")
    write(tmp_path, "e.txt", "")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert file_paths(bound) == ["a.txt", "b.txt", "c/d.txt", "e.txt"]
    assert_offsets_exact(bound, tmp_path)


def test_each_file_follows_a_one_line_header_and_a_separator_ends_unterminated_text(tmp_path):
    write(tmp_path, "a.txt", "no newline")
    write(tmp_path, "b.txt", "x\n")
    bound = bind_inputs(["a.txt", "b.txt"], cwd=str(tmp_path))
    assert bound.context == ("=== FILE: a.txt (10 bytes) ===\nno newline\n"
                             "=== FILE: b.txt (2 bytes) ===\nx\n")
    a = bound.context_files[0]
    assert bound.context[a["end"]] == "\n"  # the separator is outside the file's span
    assert HEADER.format(path="p", nbytes=3) == "=== FILE: p (3 bytes) ===\n"


def test_paths_are_relative_to_cwd_when_under_it_and_absolute_otherwise(tmp_path):
    inside = tmp_path / "work"
    outside = tmp_path / "elsewhere"
    write(inside, "in.txt", "in\n")
    far = write(outside, "out.txt", "out\n")
    bound = bind_inputs(["in.txt", far], cwd=str(inside))
    assert file_paths(bound) == ["in.txt", far]


def test_files_come_in_input_order_then_sorted_by_path(tmp_path):
    for rel in ("z/b.txt", "z/a.txt", "z/a/inner.txt", "z/a-b.txt", "first.txt"):
        write(tmp_path, rel, rel + "\n")
    bound = bind_inputs(["z", "first.txt"], cwd=str(tmp_path))
    # Sorted by path components: a folder's files stay together ("a/inner" before "a-b").
    assert file_paths(bound) == ["z/a/inner.txt", "z/a-b.txt", "z/a.txt", "z/b.txt", "first.txt"]
    assert bind_inputs(["z", "first.txt"], cwd=str(tmp_path)).context == bound.context


def test_a_file_reached_twice_is_read_once_and_reported(tmp_path):
    write(tmp_path, "src/a.py", "a = 1\n")
    write(tmp_path, "src/b.py", "b = 2\n")
    bound = bind_inputs(["src", "src/a.py"], cwd=str(tmp_path))
    assert file_paths(bound) == ["src/a.py", "src/b.py"]
    assert reasons(bound)["src/a.py"].startswith("same file as src/a.py")


# ---------------------------------------------------------------- globs

@pytest.mark.parametrize("pattern, matches, misses", [
    ("src/**/*.py", ["src/a.py", "src/x/y/b.py"], ["a.py", "lib/src/c.py", "src/a.pyc"]),
    ("*.log", ["a.log", ".hidden.log"], ["logs/b.log"]),
    ("**/*.log", ["a.log", "logs/b.log", "x/y/z.log"], ["a.log.1"]),
    ("logs/**", ["logs/a", "logs/x/y"], ["logs", "other/a"]),
    ("src/", ["src/a.py", "src/x/b"], ["src"]),
    ("./a?.txt", ["ab.txt"], ["a.txt", "a/b.txt"]),
    ("[ab]*.md", ["a.md", "bx.md"], ["c.md"]),
    ("[!ab]*.md", ["c.md"], ["a.md"]),
    ("a**b", ["ab", "axxb"], ["a/b"]),
])
def test_glob_semantics_are_exact(pattern, matches, misses):
    glob = Glob(pattern)
    assert [p for p in matches if glob.match(p)] == matches
    assert [p for p in misses if glob.match(p)] == []


def test_globs_select_files_in_folders_relative_to_the_folder(tmp_path):
    for rel in ("proj/src/a.py", "proj/src/x/y/b.py", "proj/top.py", "proj/src/notes.md"):
        write(tmp_path, rel, "x\n")
    bound = bind_inputs(["proj"], ["src/**/*.py"], cwd=str(tmp_path))
    assert file_paths(bound) == ["proj/src/a.py", "proj/src/x/y/b.py"]
    assert "matched no --glob" in reasons(bound)["proj"]
    top = bind_inputs(["proj"], ["*.py"], cwd=str(tmp_path))
    assert file_paths(top) == ["proj/top.py"]


def test_a_file_given_directly_is_read_whatever_the_globs(tmp_path):
    write(tmp_path, "notes.md", "n\n")
    write(tmp_path, "d/a.py", "a\n")
    bound = bind_inputs(["notes.md", "d"], ["*.py"], cwd=str(tmp_path))
    assert file_paths(bound) == ["notes.md", "d/a.py"]


def test_a_glob_that_matches_nothing_is_warned_about(tmp_path):
    write(tmp_path, "d/a.py", "a\n")
    bound = bind_inputs(["d"], ["*.py", "*.rs"], cwd=str(tmp_path))
    assert "--glob '*.rs' matched no file" in bound.warnings


def test_a_glob_naming_a_skipped_folder_reads_it(tmp_path):
    write(tmp_path, "node_modules/lib/index.js", "js\n")
    write(tmp_path, "app.js", "app\n")
    bound = bind_inputs(["."], ["node_modules/lib/*.js"], cwd=str(tmp_path))
    assert file_paths(bound) == ["node_modules/lib/index.js"]


# ---------------------------------------------------------------- skip rules

def test_tool_folders_are_skipped_once_each_with_what_and_how_to_include(tmp_path):
    write(tmp_path, "main.py", "print()\n")
    for folder in (".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__",
                   ".pytest_cache", ".mypy_cache", ".ruff_cache", ".tox", ".cache",
                   "dist", "target", ".next", "pkg.egg-info"):
        write(tmp_path, f"{folder}/sub/f.txt", "x\n")
        write(tmp_path, f"{folder}/g.txt", "x\n")
    write(tmp_path, "build/lib/pkg/mod.py", "x\n")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert file_paths(bound) == ["main.py"]
    got = reasons(bound)
    assert len(bound.skipped) == len(got) == 17  # one entry per folder, nothing inside them
    assert got[".git"] == "version control folder (2 files); pass it as its own --input to include it"
    assert got["node_modules"].startswith("dependencies folder (2 files)")
    assert got["__pycache__"].startswith("cache folder")
    assert got["build"].startswith("build output folder (1 file)")
    assert got["pkg.egg-info"].startswith("build output folder")
    assert all("pass it as its own --input" in r for r in got.values())


def test_any_folder_holding_pyvenv_cfg_is_a_virtual_environment(tmp_path):
    write(tmp_path, "main.py", "x\n")
    write(tmp_path, "myenv/pyvenv.cfg", "home = /usr\n")
    write(tmp_path, "myenv/lib/site.py", "x\n")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert reasons(bound)["myenv"].startswith("virtual environment folder (has pyvenv.cfg, 2 files)")


def test_an_env_folder_without_pyvenv_cfg_is_read(tmp_path):
    write(tmp_path, "env/settings.py", "DEBUG = True\n")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert file_paths(bound) == ["env/settings.py"]


def test_a_build_folder_holding_source_is_read_with_a_warning(tmp_path):
    write(tmp_path, "build/make_release.py", "x\n")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert file_paths(bound) == ["build/make_release.py"]
    assert any(w.startswith("build: named like build output but holds source files (.py)")
               for w in bound.warnings)


def test_a_skipped_name_given_as_its_own_input_is_read(tmp_path):
    write(tmp_path, "node_modules/x.js", "x\n")
    bound = bind_inputs(["node_modules"], cwd=str(tmp_path))
    assert file_paths(bound) == ["node_modules/x.js"]


def test_binary_content_is_skipped_whatever_the_extension(tmp_path):
    write(tmp_path, "ok.txt", "text\n")
    write(tmp_path, "nul.txt", b"PK\x03\x04\x00\x00abc")
    write(tmp_path, "noise.txt", bytes(range(1, 32)) * 50 + bytes(range(128, 256)) * 20)
    bound = bind_inputs(["."], cwd=str(tmp_path))
    assert file_paths(bound) == ["ok.txt"]
    assert reasons(bound) == {"nul.txt": "binary", "noise.txt": "binary"}


def test_symlink_loops_and_broken_links_are_skipped_with_a_reason(tmp_path):
    write(tmp_path, "d/a.txt", "a\n")
    os.symlink("..", str(tmp_path / "d" / "up"))
    os.symlink("self", str(tmp_path / "d" / "self"))
    os.symlink("missing", str(tmp_path / "d" / "gone"))
    bound = bind_inputs(["d"], cwd=str(tmp_path))
    got = reasons(bound)
    assert file_paths(bound) == ["d/a.txt"]
    assert got["d/up"].startswith("symlink loop")
    assert got["d/self"] == "symlink loop"
    assert got["d/gone"].startswith("broken symlink")


def test_a_symlinked_folder_outside_the_input_is_followed(tmp_path):
    write(tmp_path, "shared/s.txt", "s\n")
    write(tmp_path, "d/a.txt", "a\n")
    os.symlink(str(tmp_path / "shared"), str(tmp_path / "d" / "link"))
    bound = bind_inputs(["d"], cwd=str(tmp_path))
    assert file_paths(bound) == ["d/a.txt", "d/link/s.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_is_skipped_as_permission_denied(tmp_path):
    write(tmp_path, "d/ok.txt", "ok\n")
    secret = write(tmp_path, "d/secret.txt", "s\n")
    os.chmod(secret, 0)
    try:
        bound = bind_inputs(["d"], cwd=str(tmp_path))
    finally:
        os.chmod(secret, 0o600)
    assert reasons(bound)["d/secret.txt"] == "unreadable: permission denied"


def test_sockets_and_fifos_are_skipped_as_not_regular_files(tmp_path):
    write(tmp_path, "d/ok.txt", "ok\n")
    os.mkfifo(str(tmp_path / "d" / "pipe"))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "d" / "sock"))
        bound = bind_inputs(["d"], cwd=str(tmp_path))
    finally:
        sock.close()
    got = reasons(bound)
    assert got["d/pipe"] == "not a regular file: named pipe (fifo)"
    assert got["d/sock"] == "not a regular file: socket"


# ---------------------------------------------------------------- decoding

def test_invalid_utf8_is_replaced_and_warned_about(tmp_path):
    write(tmp_path, "latin.log", b"caf\xe9 ok\nna\xefve\n")
    bound = bind_inputs(["latin.log"], cwd=str(tmp_path))
    assert bound.context == "caf\ufffd ok\nna\ufffdve\n"
    assert bound.warnings == ["latin.log: invalid UTF-8 (first at byte 3), decoded with replacement "
                              "(2 characters replaced by U+FFFD)"]


def test_a_utf8_bom_is_dropped_and_bytes_still_count_it(tmp_path):
    write(tmp_path, "bom.txt", b"\xef\xbb\xbfhello\n")
    bound = bind_inputs(["bom.txt"], cwd=str(tmp_path))
    assert bound.context == "hello\n"
    assert bound.context_files[0]["bytes"] == 9


def test_an_empty_file_is_read_with_a_warning(tmp_path):
    write(tmp_path, "empty.txt", "")
    bound = bind_inputs(["empty.txt"], cwd=str(tmp_path))
    assert bound.context == ""
    assert bound.context_files == [{"path": "empty.txt", "start": 0, "end": 0, "bytes": 0}]
    assert bound.warnings == ["empty.txt: empty file (0 bytes)"]
    assert bound.summary()["lines"] == 0


# ---------------------------------------------------------------- errors

def test_a_missing_path_is_an_input_error_quoting_it(tmp_path):
    with pytest.raises(InputError) as exc:
        bind_inputs(["nope.log"], cwd=str(tmp_path))
    assert "'nope.log'" in exc.value.message
    assert str(tmp_path) in exc.value.hint


def test_a_folder_with_no_matching_file_says_what_was_skipped_and_the_globs(tmp_path):
    write(tmp_path, "d/logs/a.log", "x\n")
    write(tmp_path, "d/node_modules/m.js", "x\n")
    with pytest.raises(InputError) as exc:
        bind_inputs(["d"], ["*.log"], cwd=str(tmp_path))
    assert "'d'" in exc.value.message and "'*.log'" in exc.value.message
    assert "2 folders not walked" in exc.value.hint and "**/*.ext" in exc.value.hint
    with pytest.raises(InputError) as exc:
        bind_inputs(["d/node_modules/.."], ["**/*.js"], cwd=str(tmp_path))
    assert "node_modules (dependencies folder" in exc.value.hint


def test_nothing_readable_at_all_is_an_error(tmp_path):
    write(tmp_path, "blob.bin", b"\x00\x01\x02")
    with pytest.raises(InputError) as exc:
        bind_inputs(["blob.bin"], cwd=str(tmp_path))
    assert "blob.bin (binary)" in exc.value.hint


def test_no_input_and_bad_globs_are_errors(tmp_path):
    with pytest.raises(InputError):
        bind_inputs([], cwd=str(tmp_path))
    for bad in ("", "/abs/*.py"):
        with pytest.raises(InputError):
            bind_inputs(["."], [bad], cwd=str(tmp_path))


# ---------------------------------------------------------------- summary

def test_summary_reports_counts_previews_and_caps_skipped(tmp_path):
    write(tmp_path, "a.txt", "one\ntwo")
    for i in range(205):
        write(tmp_path, f"bin{i:03}.txt", b"\x00")
    bound = bind_inputs(["."], cwd=str(tmp_path))
    s = bound.summary()
    assert (s["files"], s["bytes"], s["chars"], s["lines"]) == (1, 7, 7, 2)
    assert s["est_tokens"] == 2  # 7 chars / 4, rounded up
    assert len(s["skipped"]) == 200 and s["skipped_count"] == 205 == len(bound.skipped)
    assert s["preview"] == "one\ntwo"
    assert s["files_preview"] == [{"path": "a.txt", "bytes": 7}]
    assert s["warnings"] == [] and s["warnings_count"] == 0


def test_summary_counts_lines_of_the_whole_context(tmp_path):
    for i in range(25):
        write(tmp_path, f"f{i:02}.txt", "x" * 100 + "\n")
    s = bind_inputs(["."], cwd=str(tmp_path)).summary()
    assert s["files"] == 25 and s["lines"] == 50  # a header and a line per file
    assert len(s["files_preview"]) == 20 and len(s["preview"]) == 1500


def test_rlm_home_inside_an_input_folder_is_never_read(tmp_path, monkeypatch):
    home = tmp_path / "proj" / ".rlm"
    (home / "sessions" / "s1").mkdir(parents=True)
    (home / "sessions" / "s1" / "key").write_text("secret-session-key")
    (tmp_path / "proj" / "a.txt").write_text("hello\n")
    monkeypatch.setenv("RLM_HOME", str(home))
    bound = bind_inputs([str(tmp_path / "proj")], cwd=str(tmp_path))
    assert "secret-session-key" not in bound.context
    assert any("RLM_HOME" in s["reason"] for s in bound.skipped)
