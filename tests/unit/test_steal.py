"""The stealing and draining decisions, with plain data (``rqcluster.steal``)."""

from __future__ import annotations

from collections import Counter

from rqcluster.steal import Holder, finish, job_speeds, plan_drain, plan_steals, unit_order


def units(job: str, *indexes: int) -> tuple[str, ...]:
    return tuple(f"{job}:{i}" for i in indexes)


def test_an_idle_slave_takes_the_last_units_of_the_queue_expected_to_finish_last() -> None:
    holders = {"fast": Holder(1.0), "slow": Holder(1.0, units("j", 4, 5, 6, 7, 8, 9), 1)}
    moves = plan_steals(holders)
    # slow would finish its 6 queued units at 6.5; each move to "fast" is worth it while
    # fast's next finish (1, 2, 3) is earlier than slow's last (5.5, 4.5, 3.5)
    assert [(m.member, m.source, m.target, m.why) for m in moves] == [
        ("j:9", "slow", "fast", "stolen"), ("j:8", "slow", "fast", "stolen"),
        ("j:7", "slow", "fast", "stolen")]


def test_a_slow_slave_s_whole_queue_goes_to_faster_idle_ones_when_they_finish_sooner() -> None:
    holders = {"a": Holder(4.0), "b": Holder(4.0),
               "slow": Holder(1.0, units("j", *range(10)), 1)}
    moves = plan_steals(holders)
    # slow's last unit would end at 1.5; the fast pair take five each and end at 1.25
    assert Counter(m.target for m in moves) == {"a": 5, "b": 5}
    assert sorted(m.member for m in moves) == sorted(units("j", *range(10)))
    assert finish(Holder(4.0), 5) == 1.25 < finish(Holder(1.0, units("j", 0), 1)) == 1.5


def test_a_slow_slave_keeps_what_it_finishes_before_the_idle_ones_would() -> None:
    holders = {"a": Holder(1.0), "slow": Holder(0.5, units("j", *range(6)))}
    moves = plan_steals(holders)
    # slow: 6 units at 2 each; a: 1 each. a takes 4 (ends at 4), slow keeps 2 (ends at 4)
    assert [m.member for m in moves] == ["j:5", "j:4", "j:3", "j:2"]


def test_nothing_moves_when_no_slave_is_idle_or_when_moving_would_not_finish_sooner() -> None:
    busy = {"a": Holder(1.0, units("j", 1, 2)), "b": Holder(1.0, units("j", 3, 4))}
    assert plan_steals(busy) == []
    one_left = {"idle": Holder(1.0), "other": Holder(1.0, units("j", 3))}
    assert plan_steals(one_left) == []  # idle would finish it at 1, other does too
    slower_thief = {"idle": Holder(0.25), "other": Holder(1.0, units("j", 3, 4))}
    assert plan_steals(slower_thief) == []  # 4 > 2: it would finish later on the thief


def test_dead_and_draining_slaves_never_receive_stolen_units() -> None:
    holders = {"dead": Holder(9.0, alive=False), "leaving": Holder(9.0, draining=True),
               "idle": Holder(1.0), "slow": Holder(1.0, units("j", 1, 2, 3, 4))}
    assert {m.target for m in plan_steals(holders)} == {"idle"}


def test_a_dead_slave_s_units_are_left_to_the_reaper() -> None:
    holders = {"idle": Holder(1.0), "dead": Holder(1.0, units("j", 1, 2, 3), alive=False)}
    assert plan_steals(holders) == []


def test_steals_per_pass_are_capped() -> None:
    holders = {"idle": Holder(100.0), "slow": Holder(1.0, units("j", *range(50)))}
    assert len(plan_steals(holders, limit=7)) == 7


def test_drain_moves_every_queued_unit_to_the_slaves_that_would_finish_them_soonest() -> None:
    holders = {"leaving": Holder(1.0, units("j", 1, 2, 3, 4, 5, 6), 1, draining=True),
               "fast": Holder(2.0, units("j", 7, 8)), "slow": Holder(1.0),
               "dead": Holder(5.0, alive=False)}
    moves = plan_drain(holders)
    assert sorted(m.member for m in moves) == list(units("j", 1, 2, 3, 4, 5, 6))
    assert {m.why for m in moves} == {"drained"} and {m.source for m in moves} == {"leaving"}
    took = Counter(m.target for m in moves)
    assert took == {"fast": 4, "slow": 2}  # fast ends at 6/2 = 3, slow at 2


def test_drain_with_nowhere_to_go_moves_nothing() -> None:
    holders = {"leaving": Holder(1.0, units("j", 1), draining=True), "dead": Holder(1.0,
                                                                                    alive=False)}
    assert plan_drain(holders) == []


def test_job_speeds_are_measured_rates_on_the_priors_scale() -> None:
    prior = {"a": 1.0, "b": 1.0, "c": 1.0, "new": 2.0}
    speeds = job_speeds({"a": 8, "b": 8, "c": 2}, {"a": 8.0, "b": 8.0, "c": 8.0}, prior)
    assert speeds["a"] == speeds["b"] == 3 / 2.25 * 1.0
    assert speeds["c"] == 3 / 2.25 * 0.25
    assert speeds["new"] == 2.0  # not measured by this job yet: its prior
    assert job_speeds({"a": 3}, {"a": 1.0}, prior) == prior  # one slave says nothing


def test_held_units_are_ordered_as_their_slave_runs_them() -> None:
    rank = {"old": 1.0, "new": 2.0}
    members = ["new:0", "old:10", "old:2", "new:1"]
    assert sorted(members, key=lambda m: unit_order(m, rank)) == \
        ["old:2", "old:10", "new:0", "new:1"]
