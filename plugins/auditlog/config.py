"""[plugins.auditlog] in rportd.conf. RPort's own keys stay in [api]: enable_audit_log,
use_ip_obfuscation, audit_log_rotation (read from server.config.api)."""

from __future__ import annotations

import attrs

from rport.core.plugin import Duration


@attrs.frozen
class AuditlogConfig:
    max_entries: int = 1_000_000
    """Entries kept in the database at most; the oldest beyond are rotated out."""
    archive: bool = True
    """Rotated-out entries are appended to gzipped JSON-lines files in data_dir/auditlog, one
    per rotation period (``auditlog-2026-11.jsonl.gz``); false: they are deleted."""
    keep_archives: int = 12
    """Archive files kept; older ones are deleted."""
    check_interval: Duration = Duration(3600)
    """How often entries are rotated out (also once at start-up)."""
    max_value_chars: int = 65536
    """Longest string recorded inside a request or response (a command's output, say): longer
    ones are cut, so the text stays JSON; a whole text is at most four times this."""
    max_value_items: int = 100
    """Longest list recorded inside a request or response: longer ones keep their first items
    and end with a note saying how many more there were. (A command for 10,000 clients is an
    entry per client, each holding the request: its list of client ids would be 150 KB per
    entry.)"""
