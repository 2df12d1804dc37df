"""Unit tests of the commands plugin's pure parts: the ``[remote-commands]`` allow/deny policy
(RPort's ``TestIsCommandAllowed`` table, rport-api.md §5.2, the seed's examples) and the
runner's per-stream capture that enforces ``send_back_limit``."""

from __future__ import annotations

import pytest
from rport.plugins.commands.config import (
    DEFAULT_ALLOW,
    DEFAULT_DENY,
    RemoteCommandsConfig,
)
from rport.plugins.commands.policy import CommandPolicy, PolicyError
from rport.plugins.commands.runner import _Capture

AD = ("allow", "deny")
DA = ("deny", "allow")

CASES = [
    # (case, allow, deny, order, command, allowed)
    ("allow,deny: allowed and not denied", ["^/usr/bin/.*"], ["^/usr/bin/zip"], AD, "/usr/bin/date", True),
    ("allow,deny: allowed but denied", ["^/usr/bin/.*"], ["^/usr/bin/zip"], AD, "/usr/bin/zip -r a.zip .", False),
    ("allow,deny: not allowed, not denied", ["^/usr/bin/.*"], ["^/usr/bin/zip"], AD, "/bin/date", False),
    ("allow,deny: empty allow list denies everything", [], [], AD, "/usr/bin/date", False),
    ("allow,deny: empty deny list, allowed", [".*"], [], AD, "date; id", True),
    ("allow,deny: a pattern searches, it is not anchored", ["date"], [], AD, "/usr/bin/date -u", True),
    ("deny,allow: denied unless allowed (seed), allowed", ["zip$"], [".*"], DA, "/usr/bin/zip", True),
    ("deny,allow: denied unless allowed (seed), denied", ["zip$"], [".*"], DA, "/usr/bin/date", False),
    ("deny,allow: matching neither is permitted", ["zip$"], ["^rm"], DA, "/usr/bin/date", True),
    ("deny,allow: matching both is allowed", ["^/usr/bin/"], ["rm"], DA, "/usr/bin/rm -f x", True),
    ("deny,allow: empty lists permit everything", [], [], DA, "anything at all", True),
    ("defaults: a full path is allowed", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date", True),
    ("defaults: a bare name is not", DEFAULT_ALLOW, DEFAULT_DENY, AD, "date", False),
    ("defaults: /usr/local/bin", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/local/bin/tool -x", True),
    ("defaults: Windows System32", DEFAULT_ALLOW, DEFAULT_DENY, AD, r"C:\Windows\System32\ipconfig.exe", True),
    ("defaults: ; chains", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date; /usr/bin/id", False),
    ("defaults: | pipes", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date | /usr/bin/cat", False),
    ("defaults: && chains", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date && /usr/bin/id", False),
    ("defaults: > redirects", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date > /tmp/x", False),
    ("defaults: < redirects", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/cat < /etc/passwd", False),
    ("defaults: , is denied", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/echo a,b", False),
    ("defaults: a newline is denied", DEFAULT_ALLOW, DEFAULT_DENY, AD, "/usr/bin/date\n/usr/bin/id", False),
]


@pytest.mark.parametrize(("allow", "deny", "order", "command", "allowed"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_is_command_allowed(allow: list[str], deny: list[str], order: tuple[str, str],
                            command: str, allowed: bool) -> None:
    why = CommandPolicy.build(allow, deny, order).check(command)
    if allowed:
        assert why is None
    else:
        assert isinstance(why, str) and why


def test_reasons_say_why() -> None:
    ad = CommandPolicy.build(["^/usr/bin/.*"], ["^/usr/bin/zip"], AD)
    assert "no allow pattern" in ad.check("date")  # type: ignore[operator]
    assert "'^/usr/bin/zip'" in ad.check("/usr/bin/zip")  # type: ignore[operator]
    da = CommandPolicy.build(["zip$"], [".*"], DA)
    why = da.check("/usr/bin/date")
    assert why is not None and "'.*'" in why and "deny,allow" in why


@pytest.mark.parametrize("order", [[], ["allow"], ["deny"], ["allow", "allow"], ["deny", "deny"],
                                   ["allow", "deny", "allow"], ["Allow", "Deny"], ["x", "y"]])
def test_invalid_order_is_refused(order: list[str]) -> None:
    with pytest.raises(PolicyError, match=r"remote-commands\.order"):
        CommandPolicy.build([".*"], [], order)


@pytest.mark.parametrize("key", ["allow", "deny"])
def test_invalid_pattern_is_refused(key: str) -> None:
    lists = {"allow": [".*"], "deny": []}
    lists[key] = ["(unclosed"]
    with pytest.raises(PolicyError, match=rf"remote-commands\.{key}: invalid pattern"):
        CommandPolicy.build(lists["allow"], lists["deny"], AD)


def test_config_defaults_are_rports() -> None:
    cfg = RemoteCommandsConfig()
    assert cfg.enabled is True
    assert cfg.allow == ["^/usr/bin/.*", "^/usr/local/bin/.*", r"^C:\\Windows\\System32\\.*"]
    assert cfg.deny == [r"(\||<|>|;|,|\n|&)"]
    assert cfg.order == ["allow", "deny"]
    assert cfg.send_back_limit == 4194304


# -- send_back_limit: the runner's capture ----------------------------------------------------


def test_capture_keeps_everything_under_the_limit() -> None:
    cap = _Capture("stdout", 10)
    assert cap.add(b"abc") == b"abc"
    assert cap.add(b"defg") == b"defg"
    assert bytes(cap.data) == b"abcdefg" and not cap.overflow


def test_capture_exactly_the_limit_is_no_overflow() -> None:
    cap = _Capture("stdout", 6)
    assert cap.add(b"abc") == b"abc"
    assert cap.add(b"def") == b"def"
    assert bytes(cap.data) == b"abcdef" and not cap.overflow


def test_capture_truncates_a_chunk_that_crosses_the_limit() -> None:
    cap = _Capture("stderr", 5)
    assert cap.add(b"abc") == b"abc"
    assert cap.add(b"defgh") == b"de"
    assert bytes(cap.data) == b"abcde" and cap.overflow


def test_capture_drops_chunks_after_the_limit() -> None:
    cap = _Capture("stdout", 4)
    assert cap.add(b"abcd") == b"abcd"
    assert not cap.overflow
    assert cap.add(b"e") == b""
    assert cap.add(b"fgh") == b""
    assert bytes(cap.data) == b"abcd" and cap.overflow


def test_capture_many_chunks_keep_exactly_limit_bytes() -> None:
    cap = _Capture("stdout", 1048576)
    kept = sum(len(cap.add(b"x" * 65536)) for _ in range(160))  # 10 MiB in
    assert kept == len(cap.data) == 1048576 and cap.overflow


def test_capture_text_replaces_a_cut_utf8_sequence() -> None:
    cap = _Capture("stdout", 4)
    cap.add("aé€".encode())  # 1 + 2 + 3 bytes: the euro sign is cut after its first byte
    assert cap.text() == "aé\ufffd" and cap.overflow
