"""The audit log's plain modules alone: what is redacted, how addresses are obfuscated, how long
values are bounded, which archive an entry goes to, archives appended and pruned."""

from __future__ import annotations

import calendar
import json
import os
from pathlib import Path

import attrs
import pytest

from rport.core.plugin import AuditEvent
from rport.plugins.auditlog import record, rotation


@pytest.mark.parametrize("key, secret", [
    ("password", True), ("auth_password", True), ("new_password", True), ("jwt_secret", True),
    ("token", True), ("private_key", True), ("api-key", True), ("credentials", True),
    ("token-lifetime", False), ("tokens", False), ("name", False), ("command", False),
    ("keyboard", False), ("id", False)])
def test_secret_keys(key: str, secret: bool) -> None:
    assert record.is_secret(key) is secret


def test_redaction_at_any_depth_keeps_empty_values() -> None:
    value = {"id": "a", "password": "p", "nested": [{"token": "t", "ok": 1}], "auth_password": ""}
    assert record.redact(value) == {"id": "a", "password": "<redacted>",
                                    "nested": [{"token": "<redacted>", "ok": 1}],
                                    "auth_password": ""}


@pytest.mark.parametrize("address, shown", [
    ("192.0.2.17", "192.0.2.x"), ("127.0.0.1", "127.0.0.x"),
    ("2001:db8:1:2::5", "2001:db8:1::x"), ("::ffff:192.0.2.17", "192.0.2.x"),
    ("?", "?")])
def test_obfuscation(address: str, shown: str) -> None:
    assert record.obfuscate(address) == shown


def test_long_values_are_cut_and_stay_json() -> None:
    text = record.as_text({"stdout": "x" * 1000, "ok": True}, 300)
    assert json.loads(text) == {"stdout": "x" * 300 + "... [700 more characters]", "ok": True}
    many = record.as_text([str(n) for n in range(1000)], 300)  # 4,890 characters > 4 x 300
    assert "truncated" in json.loads(many) and len(many) < 400
    assert record.as_text(None, 300) == ""


def test_one_row_per_client_with_whole_microseconds() -> None:
    event = AuditEvent("client.command", "execute.start", username="admin",
                       remote_ip="192.0.2.17", affected_id="j1", client_ids=("c1", "c2"),
                       request={"command": "date"}, timestamp=1796292864.5675569)
    rows = record.rows(event, lambda cid: f"host-{cid}", obfuscate_ip=True, max_chars=1000)
    assert [(r["client_id"], r["client_hostname"]) for r in rows] == [("c1", "host-c1"),
                                                                     ("c2", "host-c2")]
    assert rows[0]["remote_ip"] == "192.0.2.x" and rows[0]["timestamp"] == 1796292864.567556
    assert record.timestamp_text(rows[0]["timestamp"]) == "2026-12-03T10:14:24.567556Z"
    alone = record.rows(attrs.evolve(event, client_ids=()), str, obfuscate_ip=False, max_chars=1000)
    assert [(r["client_id"], r["client_hostname"], r["remote_ip"]) for r in alone] == [
        ("", "", "192.0.2.17")]


@pytest.mark.parametrize("rotation_, key", [
    ("daily", "2026-12-31"), ("weekly", "2026-W53"), ("monthly", "2026-12"), ("yearly", "2026")])
def test_archive_of_an_entry(rotation_: str, key: str) -> None:
    assert rotation.period_key(calendar.timegm((2026, 12, 31, 23, 0, 0)), rotation_) == key


def test_archives_are_appended_private_and_pruned(tmp_path: Path) -> None:
    directory = tmp_path / "auditlog"
    row = {"id": 1, "timestamp": calendar.timegm((2026, 11, 2, 8, 0, 0)), "username": "admin",
           "remote_ip": "", "application": "client", "action": "delete", "affected_id": "c1",
           "client_id": "c1", "client_hostname": "", "request": "", "response": ""}
    rotation.write_archives(directory, [row], "monthly")
    rotation.write_archives(directory, [{**row, "id": 2, "affected_id": "c2"},
                                        {**row, "id": 3, "timestamp": row["timestamp"] + 40 * 86400}],
                            "monthly")
    archives = sorted(directory.iterdir())
    assert [p.name for p in archives] == ["auditlog-2026-11.jsonl.gz", "auditlog-2026-12.jsonl.gz"]
    entries = rotation.read_archive(archives[0])
    assert [e["affected_id"] for e in entries] == ["c1", "c2"]  # two gzip members, both read
    assert entries[0]["timestamp"] == "2026-11-02T08:00:00.000000Z" and "id" not in entries[0]
    assert os.stat(archives[0]).st_mode & 0o777 == 0o600
    assert rotation.prune_archives(directory, 1) == [archives[0]]
    assert [p.name for p in directory.iterdir()] == ["auditlog-2026-12.jsonl.gz"]


def test_long_lists_keep_their_first_items_and_say_how_many_more() -> None:
    request = {"command": "date", "client_ids": [f"c{n}" for n in range(1000)],
               "tags": {"tags": ["a", "b"], "operator": "OR"}, "password": "p"}
    recorded = json.loads(record.as_text(request, 300, 100))
    assert recorded["client_ids"] == [f"c{n}" for n in range(100)] + ["... [900 more items]"]
    assert recorded["tags"] == {"tags": ["a", "b"], "operator": "OR"}
    assert recorded["password"] == "<redacted>"
    assert json.loads(record.as_text(request, 4096))["client_ids"][-1] == "c999"  # (no limit)
