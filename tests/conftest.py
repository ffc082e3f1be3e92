"""Shared test setup: make `tests/` and the repository root importable, and offer a fake Messages API.

`from fake_api import FakeAPI` works in every test module because this folder is put on sys.path; the
`fake_api` fixture serves a fresh fake API on 127.0.0.1 for one test and stops it afterwards.
"""
from __future__ import annotations

import os
import sys

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT_DIR = os.path.dirname(TESTS_DIR)
for _path in (TESTS_DIR, ROOT_DIR):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from fake_api import FakeAPI  # noqa: E402  (needs the path above)


@pytest.fixture
def fake_api():
    """A fake Messages API on 127.0.0.1 for one test; see tests/fake_api.py for its knobs."""
    with FakeAPI() as api:
        yield api


@pytest.fixture
def api(fake_api, monkeypatch):
    """The fake API, reached by every CLI command of the test and the workers they start."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake_api.base_url)
    return fake_api


@pytest.fixture
def data(tmp_path):
    """A small text input: 100 lines 'row N'."""
    path = tmp_path / "data.txt"
    path.write_text("".join(f"row {i}\n" for i in range(100)))
    return path


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    """Every test gets its own RLM_HOME, no real key, and a base URL that can only be loopback.

    Workers started by the test are killed at teardown so none outlives it.
    """
    home = tmp_path / "rlm-home"
    monkeypatch.setenv("RLM_HOME", str(home))
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-test-never-real")
    monkeypatch.setenv("RLM_IDLE_EXIT", "300")
    for name in ("RLM_DRY_RUN", "RLM_MODEL", "RLM_MAX_CALLS", "RLM_MAX_USD", "RLM_MAX_TOKENS", "RLM_CONCURRENCY",
                 "RLM_STDOUT_MAX", "RLM_EXEC_TIMEOUT", "RLM_API_TIMEOUT", "RLM_PROGRESS", "RLM_DEBUG",
                 "RLM_CHECKPOINT_MAX_MB"):
        monkeypatch.delenv(name, raising=False)
    yield home
    kill_workers(home)


def kill_workers(home) -> None:
    import signal
    sessions = os.path.join(str(home), "sessions")
    if not os.path.isdir(sessions):
        return
    for name in os.listdir(sessions):
        try:
            with open(os.path.join(sessions, name, "worker.pid")) as f:
                os.kill(int(f.read().strip()), signal.SIGKILL)
        except (OSError, ValueError):
            pass
