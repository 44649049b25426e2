"""The MongoDB user script. No MongoDB server exists here, so node parses it and runs it against
a recording stand-in for mongosh's ``db``: that proves the script's logic (create once, then only
re-key; one user per database, readWrite on that database alone), not MongoDB's behaviour."""

from __future__ import annotations

import json
import subprocess

import pytest

from components.mongo_init import render_mongo_init_js
from tests.conftest import require_tool

USERS = {"pencom_notifications": ("notifications", "n'pass\"with quotes"), "pencom_core_otp": ("core", "c-pass")}

FAKE_MONGOSH = """
const fs = require('fs');
const state = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const calls = [];
const db = { getSiblingDB(name) { return {
  getUser(user) { return (state[name] || []).includes(user) ? { user } : null; },
  createUser(spec) { calls.push(['create', name, spec]); (state[name] = state[name] || []).push(spec.user); },
  updateUser(user, spec) { calls.push(['update', name, user, spec]); },
}; } };
const print = () => {};
eval(fs.readFileSync(process.argv[3], 'utf8'));
fs.writeFileSync(process.argv[2], JSON.stringify(state));
console.log(JSON.stringify(calls));
"""


def _run(tmp_path, script: str) -> list:
    node = require_tool("node", "Debian package nodejs")
    (tmp_path / "init.js").write_text(script)
    (tmp_path / "fake.js").write_text(FAKE_MONGOSH)
    state = tmp_path / "state.json"
    if not state.exists():
        state.write_text("{}")
    result = subprocess.run([node, str(tmp_path / "fake.js"), str(state), str(tmp_path / "init.js")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.realtool
def test_script_parses(tmp_path):
    node = require_tool("node", "Debian package nodejs")
    path = tmp_path / "init.js"
    path.write_text(render_mongo_init_js(USERS))
    assert subprocess.run([node, "--check", str(path)], capture_output=True).returncode == 0
    path.write_text(render_mongo_init_js(USERS).replace("for (const", "for (cnst"))
    assert subprocess.run([node, "--check", str(path)], capture_output=True).returncode != 0


@pytest.mark.realtool
def test_users_are_created_once_then_only_rekeyed(tmp_path):
    first = _run(tmp_path, render_mongo_init_js(USERS))
    assert sorted((c[0], c[1], c[2]["user"]) for c in first) == [
        ("create", "pencom_core_otp", "core"), ("create", "pencom_notifications", "notifications")]
    for call in first:
        assert call[2]["roles"] == [{"role": "readWrite", "db": call[1]}]
    assert {c[2]["pwd"] for c in first} == {"c-pass", "n'pass\"with quotes"}
    second = _run(tmp_path, render_mongo_init_js(USERS))
    assert sorted(c[0] for c in second) == ["update", "update"]


@pytest.mark.fast
def test_names_are_checked():
    with pytest.raises(ValueError, match="not a plain MongoDB name"):
        render_mongo_init_js({"db'); db.dropDatabase(); ('": ("u", "p")})
