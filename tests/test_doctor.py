"""`rlm_repl.py doctor [--live]` through the real CLI, the live check against the fake Messages API."""
from __future__ import annotations

import os
import sys

from clitools import ok, rlm
from fake_api import FakeAPI
from rlmcore import models

KEY = "sk-test-never-real"  # set by conftest for every test


def doctor(*args, **kwargs) -> dict:
    return ok("doctor", *args, **kwargs)


def test_doctor_reports_python_key_base_url_home_and_model_prices(isolated_home):
    report = doctor()
    assert report["ok"] is True and report["problems"] == []
    assert report["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert report["api_key"] == {"ok": True, "set": True}
    assert report["base_url"]["url"] == "http://127.0.0.1:9"
    assert report["rlm_home"]["path"] == str(isolated_home)
    haiku = models.MODELS["claude-haiku-5-5"]
    assert report["model"]["id"] == "claude-haiku-5-5" and report["model"]["known"] is True
    assert [(t["up_to_input_tokens"], t["input"], t["output"]) for t in report["model"]["usd_per_million_tokens"]] \
        == [tuple(t) for t in haiku["tiers"]]


def test_doctor_never_prints_the_key():
    result = rlm("doctor", env={"ANTHROPIC_API_KEY": "sk-ant-do-not-show-me-123"})
    assert result.code == 0
    assert b"do-not-show-me" not in result.stdout + result.stderr


def test_doctor_names_a_missing_key_as_a_problem():
    report = doctor(env={"ANTHROPIC_API_KEY": ""})
    assert report["ok"] is False
    assert report["api_key"]["set"] is False
    assert any("ANTHROPIC_API_KEY" in p for p in report["problems"])


def test_doctor_flags_a_session_folder_other_users_can_open(isolated_home):
    os.makedirs(isolated_home)
    os.chmod(isolated_home, 0o755)
    report = doctor()
    assert report["rlm_home"]["ok"] is False and report["rlm_home"]["mode"] == "0o755"
    assert any("chmod 700" in p for p in report["problems"])


def test_doctor_accepts_an_owner_only_session_folder(isolated_home):
    os.makedirs(isolated_home, mode=0o700)
    assert doctor()["rlm_home"] == {"ok": True, "path": str(isolated_home), "exists": True, "mode": "0o700"}


def test_doctor_warns_about_a_model_outside_the_registry():
    report = doctor(env={"RLM_MODEL": "my-local-model"})
    assert report["ok"] is True
    assert report["model"]["known"] is False
    assert any("my-local-model" in w and "dearest" in w for w in report["warnings"])


def test_doctor_reports_a_malformed_setting_instead_of_failing():
    report = doctor(env={"RLM_MAX_USD": "lots"})
    assert report["settings"]["ok"] is False
    assert any("RLM_MAX_USD='lots'" in p for p in report["problems"])


def test_doctor_sends_nothing_without_live(fake_api):
    doctor(env={"ANTHROPIC_BASE_URL": fake_api.base_url})
    assert fake_api.stats()["requests"] == 0


def test_doctor_live_sends_one_tiny_request_and_reports_latency_and_usage(fake_api):
    report = doctor("--live", env={"ANTHROPIC_BASE_URL": fake_api.base_url})
    live = report["live"]
    assert report["ok"] is True and live["ok"] is True
    assert live["model"] == "claude-haiku-5-5"
    assert live["latency_s"] >= 0 and live["usage"]["input_tokens"] > 0
    assert live["usd"] == round(models.cost_usd("claude-haiku-5-5", live["usage"]), 8)
    assert fake_api.stats()["requests"] == 1


def test_doctor_live_reports_a_refused_key():
    with FakeAPI(keys=["sk-the-right-key"]) as api:
        report = doctor("--live", env={"ANTHROPIC_BASE_URL": api.base_url})
    assert report["ok"] is False
    assert report["live"]["error_type"] == "authentication_error"
    assert "ANTHROPIC_API_KEY" in report["live"]["hint"]
    assert KEY not in str(report)


def test_doctor_live_reports_an_unknown_model_with_the_known_ids(fake_api):
    report = doctor("--live", env={"ANTHROPIC_BASE_URL": fake_api.base_url, "RLM_MODEL": "claude-nope-1"})
    assert report["live"]["error_type"] == "not_found_error"
    assert "claude-haiku-5-5" in report["live"]["hint"]


def test_doctor_live_without_a_key_sends_nothing(fake_api):
    report = doctor("--live", env={"ANTHROPIC_BASE_URL": fake_api.base_url, "ANTHROPIC_API_KEY": ""})
    assert report["live"]["ok"] is False
    assert fake_api.stats()["requests"] == 0
