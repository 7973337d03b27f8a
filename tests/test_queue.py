"""The job queue: collapsing bursts, leases, backoff, parking, and requeue after a crash, on
SQLite and on a real PostgreSQL server; concurrent claimers never share a job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import event, func, select, update

from libtagger.library.db import Job, Library, utcnow
from libtagger.service.queue import (
    claim,
    enqueue,
    enqueue_many,
    fail,
    finish,
    mark_done,
    postpone,
    queue_stats,
    requeue_claimed,
    retry_failed,
)


@pytest.fixture
def library(db_location) -> Iterator[Library]:
    with Library(db_location) as lib:
        yield lib


def test_a_burst_of_events_for_one_path_is_one_job(library):
    first = enqueue(library, "file", "/m/a.mp3", delay=5)
    for _ in range(5):
        assert enqueue(library, "file", "/m/a.mp3", delay=10) == first
    other = enqueue(library, "file", "/m/b.mp3")
    assert other != first
    with library.session() as session:
        job = session.get(Job, first)
        assert job.not_before > utcnow() + timedelta(seconds=8)  # pushed back by the burst
    assert queue_stats(library).queued == 2


def test_jobs_wait_for_their_time_and_are_claimed_once(library):
    enqueue(library, "file", "/m/later.mp3", delay=60)
    now_id = enqueue(library, "file", "/m/now.mp3")
    claimed = claim(library, 10)
    assert [j.id for j in claimed] == [now_id] and claimed[0].attempts == 1
    assert claim(library, 10) == []
    later = claim(library, 10, now=utcnow() + timedelta(seconds=61))
    assert [j.path for j in later] == ["/m/later.mp3"]


def test_failures_back_off_then_park(library):
    job_id = enqueue(library, "file", "/m/bad.mp3")
    states = []
    for attempt in range(3):
        (job,) = claim(library, 1, now=utcnow() + timedelta(hours=attempt + 1))
        states.append(fail(library, job.id, f"boom {attempt}", max_attempts=3, backoff=10))
    assert states == ["queued", "queued", "failed"]
    with library.session() as session:
        job = session.get(Job, job_id)
        assert job.last_error == "boom 2" and job.attempts == 3
    assert queue_stats(library).failed == 1
    assert retry_failed(library) == 1
    assert [j.attempts for j in claim(library, 1)] == [1]


def test_backoff_doubles(library):
    enqueue(library, "file", "/m/x.mp3")
    (job,) = claim(library, 1)
    fail(library, job.id, "first", backoff=10)
    with library.session() as session:
        first_delay = (session.get(Job, job.id).not_before - utcnow()).total_seconds()
    (job,) = claim(library, 1, now=utcnow() + timedelta(seconds=11))
    fail(library, job.id, "second", backoff=10)
    with library.session() as session:
        second_delay = (session.get(Job, job.id).not_before - utcnow()).total_seconds()
    assert 8 < first_delay <= 10 and 18 < second_delay <= 20


def test_claims_of_a_dead_daemon_are_requeued(library):
    enqueue(library, "file", "/m/a.mp3")
    enqueue(library, "gone", "/m/b.mp3")
    assert len(claim(library, 5, lease=600)) == 2
    assert requeue_claimed(library, only_expired=True) == 0  # leases still valid
    assert requeue_claimed(library) == 2  # start-up: nobody else holds them
    assert len(claim(library, 5)) == 2


def test_start_up_leaves_another_machines_live_claims(library):
    mine, theirs, stale = (enqueue(library, "file", f"/m/{n}.mp3") for n in "abc")
    claim(library, 3, lease=600)
    with library.session() as session:
        session.execute(update(Job).where(Job.id == theirs).values(claimed_by="elsewhere:1"))
        session.execute(update(Job).where(Job.id == stale).values(
            claimed_by="elsewhere:2", lease_until=utcnow() - timedelta(seconds=1)))
    assert requeue_claimed(library) == 2
    with library.session() as session:
        states = {j.id: j.state for j in session.scalars(select(Job))}
    assert states == {mine: "queued", theirs: "claimed", stale: "queued"}


def test_concurrent_claimers_never_get_the_same_job(db_location):
    with Library(db_location) as setup:
        for n in range(120):
            enqueue(setup, "file", f"/m/{n:03d}.mp3")
    claimed: list[list[int]] = [[], [], []]
    start = threading.Barrier(len(claimed))

    def claimer(mine: list[int]) -> None:
        with Library(db_location) as own:  # its own engine and connections
            start.wait()
            while batch := claim(own, 4):
                mine.extend(job.id for job in batch)

    threads = [threading.Thread(target=claimer, args=(ids,)) for ids in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == 120 and len(set(every)) == 120


def test_done_in_the_same_transaction_as_the_result(library):
    job_id = enqueue(library, "file", "/m/a.mp3")
    claim(library, 1)
    with pytest.raises(RuntimeError):
        with library.session() as session:
            mark_done(session, job_id)
            raise RuntimeError("the result could not be stored")
    with library.session() as session:
        assert session.get(Job, job_id).state == "claimed"  # rolled back with the result
    finish(library, job_id)
    with library.session() as session:
        assert session.scalars(select(Job.state)).one() == "done"


def test_postpone_does_not_count_an_attempt(library):
    job_id = enqueue(library, "file", "/m/copying.wav")
    claim(library, 1)
    postpone(library, job_id, 30)
    with library.session() as session:
        job = session.get(Job, job_id)
        assert job.state == "queued" and job.attempts == 0
        assert job.not_before > utcnow() + timedelta(seconds=25)


def test_unknown_kind_is_refused(library):
    with pytest.raises(ValueError):
        enqueue(library, "explode", "/m/a.mp3")


def test_enqueue_many_commits_in_chunks_and_reports_between_them(library):
    """A reconcile of 2,000 new files is queued in 4 transactions of 500 with a callback
    between them (regression: one transaction per path kept the main loop, and systemd's
    watchdog, waiting for thousands of fsyncs, and nothing was committed until the end)."""
    enqueue(library, "file", "/m/0007.mp3", delay=60)  # already queued: folds into it
    commits = []
    event.listen(library.engine, "commit", lambda _conn: commits.append(1))
    between = []
    paths = [f"/m/{i:04d}.mp3" for i in range(2000)]
    added = enqueue_many(library, "file", paths,
                         between=lambda done, total: between.append((done, total, len(commits))))
    assert added == 1999
    assert len(commits) == 4
    assert between == [(500, 2000, 1), (1000, 2000, 2), (1500, 2000, 3), (2000, 2000, 4)]
    with library.session() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 2000
        folded = session.scalars(select(Job).where(Job.path == "/m/0007.mp3")).one()
        assert folded.not_before > utcnow() + timedelta(seconds=50)  # its later time kept
