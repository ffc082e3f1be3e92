"""install.sh into a temporary HOME or project: link and copy, idempotent, uninstall, refusals."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTALL = os.path.join(ROOT, "install.sh")


def install(home, *args, path=None) -> subprocess.CompletedProcess:
    env = dict(os.environ, HOME=str(home))
    if path is not None:
        env["PATH"] = path
    return subprocess.run(["bash", INSTALL, *map(str, args)], capture_output=True, text=True, env=env, timeout=60)


def installed(proc) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def skill_dir(home):
    return home / ".claude" / "skills" / "rlm"


def test_default_install_links_the_user_skill_folder_to_the_checkout_and_prints_the_next_step(tmp_path):
    out = installed(install(tmp_path))
    target = skill_dir(tmp_path)
    assert target.is_symlink() and os.path.realpath(target) == os.path.realpath(ROOT)
    assert (target / "SKILL.md").read_text().startswith("---\nname: rlm\n")
    assert "rlm_repl.py doctor" in out and "ANTHROPIC_API_KEY" in out


def test_installing_twice_changes_nothing_and_says_so(tmp_path):
    installed(install(tmp_path))
    out = installed(install(tmp_path))
    assert "Already installed" in out
    assert os.listdir(tmp_path / ".claude" / "skills") == ["rlm"]


def test_copy_installs_a_working_skill_without_tests_or_caches(tmp_path):
    installed(install(tmp_path, "--copy"))
    target = skill_dir(tmp_path)
    assert target.is_dir() and not target.is_symlink()
    assert {"SKILL.md", "rlm_repl.py", "rlm_helper.py", "rlmcore", "docs"} <= set(os.listdir(target))
    assert not (target / "tests").exists() and not list(target.rglob("__pycache__"))
    proc = subprocess.run([sys.executable, str(target / "rlm_repl.py"), "list"], capture_output=True, text=True)
    assert proc.returncode == 0 and '"sessions"' in proc.stdout


def test_copy_again_replaces_the_old_copy_and_a_link_can_replace_a_copy(tmp_path):
    installed(install(tmp_path, "--copy"))
    (skill_dir(tmp_path) / "stale.txt").write_text("from an older version")
    installed(install(tmp_path, "--copy"))
    assert not (skill_dir(tmp_path) / "stale.txt").exists()
    installed(install(tmp_path))
    assert skill_dir(tmp_path).is_symlink()


def test_project_install_goes_into_the_project_and_leaves_home_alone(tmp_path):
    home, project = tmp_path / "home", tmp_path / "myapp"
    home.mkdir()
    project.mkdir()
    out = installed(install(home, "--project", project))
    assert (project / ".claude" / "skills" / "rlm" / "SKILL.md").exists()
    assert not (home / ".claude").exists()
    assert str(project / ".claude" / "skills" / "rlm") in out


def test_uninstall_removes_only_our_install(tmp_path):
    installed(install(tmp_path))
    (tmp_path / ".claude" / "skills" / "other").mkdir()
    assert "Removed" in installed(install(tmp_path, "--uninstall"))
    assert os.listdir(tmp_path / ".claude" / "skills") == ["other"]
    assert "Nothing to remove" in installed(install(tmp_path, "--uninstall"))
    assert os.path.isdir(ROOT) and os.path.exists(os.path.join(ROOT, "SKILL.md"))  # the checkout is untouched


@pytest.mark.parametrize("make", ["folder", "link"])
def test_a_target_that_is_not_ours_is_refused_and_left_untouched(tmp_path, make):
    target = skill_dir(tmp_path)
    target.parent.mkdir(parents=True)
    if make == "folder":
        target.mkdir()
        (target / "mine.txt").write_text("keep me")
    else:
        os.symlink(tmp_path, target)
    for args in ((), ("--copy",), ("--uninstall",)):
        proc = install(tmp_path, *args)
        assert proc.returncode == 1
        assert "is not an rlm install" in proc.stderr and "left untouched" in proc.stderr
    assert (target / "mine.txt").read_text() == "keep me" if make == "folder" else os.readlink(target) == str(tmp_path)


def test_a_python_older_than_3_9_is_refused(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text("#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'Python 3.8.10'; exit 0; fi\nexit 1\n")
    fake.chmod(0o755)
    proc = install(tmp_path, path=f"{bin_dir}:{os.environ['PATH']}")
    assert proc.returncode == 1
    assert "3.9 or newer" in proc.stderr and "Python 3.8.10" in proc.stderr
    assert not (tmp_path / ".claude").exists()


def test_an_unknown_option_is_a_clear_error(tmp_path):
    proc = install(tmp_path, "--frobnicate")
    assert proc.returncode == 1 and "unknown option '--frobnicate'" in proc.stderr
