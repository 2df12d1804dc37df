"""The scheduler plugin: RPort's schedules (``/schedules``): a command or a script run on
clients at the times of a cron-like schedule, as multi-client jobs with ``schedule_id``."""
