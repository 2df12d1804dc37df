"""The agent's journal of its jobs (plugins/commands/journal.py), on a real directory: what a
new agent process recovers, segments closed and deleted, the file emptied when nothing is owed.
The end-to-end cases (an agent killed mid-job, a result kept while rportd is down) are in
test_commands_durability.py."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

from rport.plugins.commands import journal as journal_module
from rport.plugins.commands.journal import Journal


def contents(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(directory.iterdir())}


def test_open_jobs_are_recovered_by_their_latest_entry(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    j = Journal(jobs)

    async def write() -> None:
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t1"})
        await j.write("b", {"jid": "b", "pid": 2, "started_at": "t2"})
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t1", "result": {"status": "ok"}})
        await j.write("c", {"jid": "c", "pid": 3, "started_at": "t3"})
        j.done("b")
    asyncio.run(write())
    assert (jobs.stat().st_mode & 0o777) == 0o700
    segment = jobs / "journal-00000000.log"
    assert (segment.stat().st_mode & 0o777) == 0o600
    j.close()  # (the agent is killed: nothing more is written)

    # a line cut short by the kill is skipped
    with segment.open("a") as f:
        f.write('{"jid": "d", "pi')
    again = Journal(jobs)
    found = again.recover()
    assert list(found) == ["a", "c"]  # in the order of their latest entries
    assert found["a"]["result"] == {"status": "ok"} and found["c"]["pid"] == 3
    # rewritten into a new segment holding just those
    assert list(contents(jobs)) == ["journal-00000001.log"]
    lines = [json.loads(line) for line in (jobs / "journal-00000001.log").read_text().splitlines()]
    assert [x["jid"] for x in lines] == ["a", "c"]
    again.done("c")
    again.done("a")
    assert contents(jobs) == {"journal-00000001.log": ""}  # nothing owed: emptied


def test_legacy_files_of_one_job_each_are_recovered_and_removed(tmp_path: Path) -> None:
    """Earlier agents wrote a ``<jid>.json`` per job: an upgraded agent delivers what they
    left."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "old.json").write_text(json.dumps({"jid": "old", "pid": 7, "started_at": "t"}))
    (jobs / "broken.json").write_text("{not json")
    j = Journal(jobs)
    assert list(j.recover()) == ["old"]
    assert list(contents(jobs)) == ["journal-00000000.log"]


def test_segments_roll_and_go_once_their_jobs_are_done(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 200)
    jobs = tmp_path / "jobs"
    j = Journal(jobs)

    async def short_jobs(n: int) -> None:
        for i in range(n):
            await j.write(f"s{i}", {"jid": f"s{i}", "pid": 10 + i, "started_at": "y" * 40})
            j.done(f"s{i}")

    asyncio.run(short_jobs(12))  # nothing else open: each segment goes as soon as it is closed
    assert len(contents(jobs)) == 1, contents(jobs)

    asyncio.run(j.write("long", {"jid": "long", "pid": 1, "started_at": "x" * 20}))
    for n in range(20, 200, 20):
        # "long" stays open (a timed-out process that runs on): the segments after its own
        # are kept (one may hold the "done" of a job of another), up to KEPT_SEGMENTS closed
        # ones; then "long" is written again and the closed ones go
        asyncio.run(short_jobs(n))
        assert len(contents(jobs)) <= journal_module.KEPT_SEGMENTS + 1, contents(jobs)
    j.close()
    assert list(Journal(jobs).recover()) == ["long"]


def test_a_done_job_does_not_come_back_while_an_older_segment_is_kept(
        tmp_path: Path, monkeypatch) -> None:
    """A job's "done" lies in a later segment than its entries: that segment must outlive every
    earlier one that holds them."""
    monkeypatch.setattr(journal_module, "SEGMENT_BYTES", 150)
    jobs = tmp_path / "jobs"
    j = Journal(jobs)

    async def run() -> None:
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t" * 30})
        await j.write("b", {"jid": "b", "pid": 2, "started_at": "t" * 30})  # same segment
        await j.write("c", {"jid": "c", "pid": 3, "started_at": "t" * 90})  # rolls
        j.done("a")  # its "done" goes into the new segment; "b" keeps the first one
        await j.write("d", {"jid": "d", "pid": 4, "started_at": "t" * 120})  # rolls again
        j.done("c")  # the second segment no longer holds an open job, but holds a's "done"
    asyncio.run(run())
    j.close()
    assert sorted(Journal(jobs).recover()) == ["b", "d"]


def test_a_large_entry_is_written_from_a_thread_whole(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    j = Journal(jobs)
    big = "x" * (journal_module.INLINE_BYTES * 2)

    async def run() -> None:
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t"})
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t", "result": {"stdout": big}})
    asyncio.run(run())
    j.close()
    assert Journal(jobs).recover()["a"]["result"]["stdout"] == big


def test_an_idle_journal_holds_no_descriptor(tmp_path: Path) -> None:
    """Every descriptor the agent holds is one more for each command's process to close at its
    start: once nothing is owed, the journal's file is closed."""
    j = Journal(tmp_path / "jobs")

    async def run() -> None:
        await j.write("a", {"jid": "a", "pid": 1, "started_at": "t"})
        fd = j._fd
        assert fd >= 0 and os.readlink(f"/proc/self/fd/{fd}").endswith("journal-00000000.log")
        j.done("a")
        assert j._fd == -1
        await j.write("b", {"jid": "b", "pid": 2, "started_at": "t"})  # opened again
        assert j._fd >= 0
    asyncio.run(run())
    j.close()
    assert list(Journal(tmp_path / "jobs").recover()) == ["b"]


def test_the_runner_makes_its_directories_at_start_up(tmp_path: Path) -> None:
    """Made by recover() (an agent's start), not by the first command; a data directory that
    cannot be written does not stop the agent: its commands will say why they cannot start."""
    from rport.plugins.commands.runner import Runner

    async def nothing(result: dict) -> None:
        pass

    runner = Runner(tmp_path / "data", 1024, on_output=lambda *_: None, on_result=nothing)
    assert runner.recover() == []
    assert (tmp_path / "data" / "scripts").is_dir() and (tmp_path / "data" / "jobs").is_dir()
    assert oct((tmp_path / "data" / "scripts").stat().st_mode & 0o777) == oct(0o700)

    (tmp_path / "file").write_text("not a directory")
    blocked = Runner(tmp_path / "file", 1024, on_output=lambda *_: None, on_result=nothing)
    assert blocked.recover() == []
