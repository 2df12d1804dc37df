"""The process's limit on open files (RLIMIT_NOFILE).

Every agent, tunnelled connection and API connection holds a file descriptor. Many systems (and
systemd's default) start programs with a soft limit of 1,024 while allowing far more (the hard
limit): both programs raise the soft limit to the hard one at start, and rportd warns when even
that is below what its connection caps can use.
"""

from __future__ import annotations

try:
    import resource
except ImportError:  # pragma: no cover - not on Windows
    resource = None  # type: ignore[assignment]


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit to the hard limit; returns (before, after). Unchanged (both equal)
    where the platform has no such limit or refuses."""
    if resource is None:
        return (0, 0)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1 << 20  # Linux refuses an infinite nofile limit; this is its usual ceiling
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return (soft, soft)
        return (soft, target)
    return (soft, soft)
