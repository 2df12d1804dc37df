"""Schedules in RPort's format (its Go scheduler's parser: minute, hour, day of month, month,
day of week, or a descriptor): ``*/5 * * * *``, ``0 3 * * 1-5``, ``@hourly``, ``@daily``,
``@weekly``, ``@monthly``, ``@yearly`` (``@annually``, ``@midnight``) and ``@every <duration>``
(``@every 30s``, ``@every 1h30m``). Times are the server's local time, as RPort's.

Cron expressions are evaluated by croniter (the most used Python cron library, maintained by
the Pallets community: day-of-month/day-of-week "either" rule as Vixie cron, and local time
across daylight-saving changes); this module only holds RPort's rules on top: exactly five
fields, its descriptors, and ``@every``.
"""

from __future__ import annotations

import datetime as dt

import attrs
from croniter import croniter

from rport.core.plugin import parse_duration

DESCRIPTORS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MIN_EVERY = 1.0


class CronError(ValueError):
    """Not a schedule; the text says why."""


@attrs.frozen
class Spec:
    text: str
    cron: str = ""
    every: float = 0.0

    def next_after(self, ts: float) -> float:
        """The first time strictly after ``ts`` (a Unix time) that this schedule fires."""
        if self.every:
            return ts + self.every
        # Naive local times: croniter steps through wall-clock times, and .timestamp() maps
        # them back through the local zone (daylight-saving changes included).
        base = dt.datetime.fromtimestamp(ts)
        return croniter(self.cron, base).get_next(dt.datetime).timestamp()


def parse(text: str) -> Spec:
    if not isinstance(text, str) or not text.strip():
        raise CronError("empty spec string")
    spec = " ".join(text.split())
    if spec.startswith("@every"):
        rest = spec[len("@every"):].strip()
        try:
            every = float(parse_duration(rest)) if rest else 0.0
        except ValueError:
            raise CronError(f"failed to parse duration {spec}: use e.g. @every 30s or @every 1h30m") from None
        if every < MIN_EVERY:
            raise CronError(f"{spec}: the interval must be at least {MIN_EVERY:g}s")
        return Spec(text, every=every)
    if spec.startswith("@"):
        if spec.lower() not in DESCRIPTORS:
            raise CronError(f"unrecognized descriptor: {spec} (use {', '.join(DESCRIPTORS)} or @every <duration>)")
        return Spec(text, cron=DESCRIPTORS[spec.lower()])
    fields = spec.split(" ")
    if len(fields) != 5:
        raise CronError(f"expected exactly 5 fields (minute hour day-of-month month day-of-week), "
                        f"found {len(fields)}: {spec}")
    if not croniter.is_valid(spec):
        raise CronError(f"invalid cron expression: {spec}")
    try:  # is_valid accepts some expressions that never match (e.g. 30 February)
        croniter(spec, dt.datetime(2000, 1, 1)).get_next(dt.datetime)
    except Exception as exc:  # croniter raises its own errors for impossible dates
        raise CronError(f"invalid cron expression: {spec}: {exc}") from None
    return Spec(text, cron=spec)
