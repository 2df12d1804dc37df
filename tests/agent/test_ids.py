"""The agent's identifiers, written as the uuid module writes them (which the agent does not
import: tests/agent/test_footprint.py)."""

from __future__ import annotations

import uuid

from rport.agent.client import dashed_uuid, random_uuid


def test_random_uuid_is_a_version_4_uuid() -> None:
    made = {random_uuid() for _ in range(200)}
    assert len(made) == 200
    for text in made:
        parsed = uuid.UUID(text)
        assert str(parsed) == text
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_machine_id_is_dashed_as_uuid_does() -> None:
    for raw in ("0123456789abcdef0123456789ABCDEF", uuid.uuid4().hex):
        assert dashed_uuid(raw) == str(uuid.UUID(raw))
    # Anything that is not 32 hex digits is kept as it is.
    for raw in ("short", "0123456789abcdef0123456789abcdeg", "{0123456789abcdef0123456789abcde}",
                "01234567-89ab-cdef-0123-456789abcdef", ""):
        assert dashed_uuid(raw) == raw
