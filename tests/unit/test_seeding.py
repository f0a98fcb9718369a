"""Unit seeds: derived from the job seed and the unit's index only, fresh at each attempt."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rqcluster
from rqcluster import enqueue, seeding
from rqcluster.errors import InputError, NotInUnit
from rqcluster.models import JobRecord, JobState

seeds = st.integers(0, 2**128 - 1)
indexes = st.integers(0, 10**6)


@given(seeds, st.integers(1, 40))
def test_unit_streams_are_the_job_seed_s_spawned_children(job_seed: int, n: int) -> None:
    children = np.random.SeedSequence(job_seed).spawn(n)
    for i, child in enumerate(children):
        ours = seeding.unit_seed_sequence(job_seed, i)
        assert (ours.generate_state(4) == child.generate_state(4)).all()


@given(seeds, indexes)
def test_a_unit_seed_is_a_63_bit_int_fixed_by_job_seed_and_index(job_seed: int,
                                                                  index: int) -> None:
    value = seeding.unit_seed(job_seed, index)
    assert 0 <= value < 2**63
    assert value == seeding.unit_seed(job_seed, index)
    assert value != seeding.unit_seed(job_seed, index + 1)


def _attempt(job: str, index: int, job_seed: int) -> tuple[int, list[float], list[int]]:
    """What a unit sees in one attempt: its seed and two draws from its generator."""
    with seeding.unit_context(job, index, job_seed):
        first = rqcluster.unit_rng().random(3).tolist()
        again = rqcluster.unit_rng().integers(0, 2**62, 3).tolist()  # continues the stream
        return rqcluster.unit_seed(), first, again


def test_every_attempt_of_a_unit_sees_the_same_seed_and_the_same_fresh_generator() -> None:
    one = _attempt("job-a", 5, 42)
    _attempt("job-a", 6, 42)  # another unit ran in between on this slave
    two = _attempt("job-a", 5, 42)
    assert one == two
    assert one[1] != _attempt("job-a", 6, 42)[1]
    assert one[1] != _attempt("job-a", 5, 43)[1]
    # Successive calls in one unit give one stream, not the same numbers again.
    rng = np.random.default_rng(seeding.unit_seed_sequence(42, 5))
    assert one[1] == rng.random(3).tolist()
    assert one[2] == rng.integers(0, 2**62, 3).tolist()


def test_the_seed_does_not_depend_on_which_slave_or_attempt_runs_the_unit(redis_conn) -> None:
    """Through the real start script: the slave gets the job's seed back, whoever starts
    the unit and however often."""
    from rqcluster import keys
    from rqcluster.scripts import START_UNIT
    job_id = "j1"
    record = JobRecord(id=job_id, kind="map", state=JobState.RUNNING, params={},
                       description="", submitted=0.0, seed=2**70 + 3)
    redis_conn.hset(keys.job(job_id), mapping=record.encode())
    redis_conn.hset(keys.units(job_id), "4", "{}")
    start = redis_conn.register_script(START_UNIT)
    answers = []
    for slave in ("s1", "s2", "s1"):
        member = keys.unit_member(job_id, 4)
        redis_conn.sadd(keys.slave_units(slave), member)
        answers.append(start(keys=[keys.job(job_id), keys.units(job_id), keys.attempts(job_id),
                                   keys.RUNNING, keys.worker(f"{slave}.1"),
                                   keys.partials(job_id), keys.slave_units(slave)],
                             args=[4, member, "{}", "{}", 1000]))
    assert [a[4] for a in answers] == [1, 2, 3]  # three attempts
    assert {a[5] for a in answers} == {str(2**70 + 3).encode()}


def test_outside_a_unit_the_rng_and_seed_raise_a_clear_error() -> None:
    with pytest.raises(NotInUnit, match="only inside a unit"):
        rqcluster.unit_rng()
    with pytest.raises(NotInUnit):
        rqcluster.unit_seed()
    with seeding.unit_context("j", 0, 1):
        rqcluster.unit_seed()
    with pytest.raises(NotInUnit):  # reset on the way out
        rqcluster.unit_seed()


def test_a_job_without_a_recorded_seed_gets_one_fixed_by_its_id() -> None:
    with seeding.unit_context("old-job", 2, None) as ctx:
        seed = ctx.job_seed
    assert seed == seeding.fallback_seed("old-job") != seeding.fallback_seed("other-job")


def test_job_seed_is_recorded_and_old_records_decode_without_one() -> None:
    record = JobRecord(id="x", kind="map", state=JobState.DONE, params={}, description="",
                       submitted=1.0, seed=12345)
    assert JobRecord.decode(record.encode()).seed == 12345
    old = record.encode()
    del old["seed"]
    assert JobRecord.decode(old).seed is None


def test_submit_takes_the_given_seed_else_a_random_63_bit_one() -> None:
    given_ = enqueue.validate("map", None, seed=7, function=abs, items=[1])
    assert given_.seed == 7
    chosen = {enqueue.validate("map", None, function=abs, items=[1]).seed for _ in range(3)}
    assert len(chosen) == 3 and all(0 <= s < 2**63 for s in chosen if s is not None)


def test_montecarlo_s_seed_is_the_job_seed() -> None:
    job = enqueue.validate("montecarlo", None, seed=99, samples=1000)
    assert job.seed == job.prepared.params["seed"] == 99
    chosen = enqueue.validate("montecarlo", None, samples=1000)
    assert chosen.seed == chosen.prepared.params["seed"]


@pytest.mark.parametrize("bad", [-1, 2**128, 1.5, "7", True])
def test_a_bad_seed_is_refused(bad: object) -> None:
    with pytest.raises(InputError, match="seed"):
        enqueue.validate("map", None, seed=bad, function=abs, items=[1])  # type: ignore[arg-type]
