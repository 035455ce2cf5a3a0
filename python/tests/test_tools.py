"""`qbox.export_token` and `qbox.doctor`, the package's `qbox
export-token` and `qbox doctor --json`."""

from __future__ import annotations

import json

import pytest

import qbox
from conftest import TOKEN, login_store, make_store


def test_export_token_returns_the_token_and_refreshes_an_expired_one(home, standin, monkeypatch, tmp_path):
    store = login_store(home)
    assert qbox.export_token() == TOKEN
    assert qbox.export_token(db=store, field="refresh") == "standin-refresh-0"
    exported = qbox.export_token(db=str(store), field=None)
    assert exported["accessToken"] == TOKEN
    assert set(exported) == {"accessToken", "refreshToken", "expiresAt", "region", "profileArn"}
    expired = make_store(tmp_path / "other" / "data.sqlite3", "old-token", expired=True)
    monkeypatch.setenv("QBOX_OIDC_ENDPOINT", standin.oidc)
    assert qbox.export_token(db=expired) == "standin-access-1"
    assert standin.oidc_requests() == 1


def test_export_token_without_a_login_is_no_login(home):
    with pytest.raises(qbox.NoLoginError) as caught:
        qbox.export_token()
    assert "hint: " in str(caught.value)


def test_doctor_reports_like_doctor_json_without_the_token(home, monkeypatch):
    store = login_store(home)
    monkeypatch.setenv("QBOX_DB", str(store))
    report = qbox.doctor()
    assert report["ok"] is True
    assert report["store"]["path"] == str(store)
    assert report["login_kind"] == "builder-id"
    assert report["chatEndpoint"]["credentials"] == "store"
    assert TOKEN not in json.dumps(report)


def test_doctor_without_a_login_says_so(home):
    report = qbox.doctor()
    assert report["ok"] is False
    assert report["error"]["hint"]
