"""The burst benchmark's reference: the ideal dispatcher and the "most held at once" count,
on scenarios small enough to work out by hand."""

from bench.burst import (
    ACK_TIMEOUT_S,
    CAPACITY,
    SITE_COACHES,
    STATE_COACHES,
    Answer,
    Behaviour,
    Scenario,
    draw,
    ideal,
    most_at_once,
)

COACHES = SITE_COACHES + STATE_COACHES


def _scenario(arrivals: list[float], special: dict[tuple[int, int], Behaviour]) -> Scenario:
    """Every coach declines after 1 s unless `special` says otherwise."""
    behaviour = {
        (r, c): special.get((r, c), Behaviour(1.0, Answer.DECLINE, 0.0))
        for r in range(len(arrivals))
        for c in range(COACHES)
    }
    return Scenario(arrivals, behaviour)


def test_a_referral_goes_to_the_first_site_coach_and_is_accepted_after_their_delay() -> None:
    outcome = ideal(_scenario([0.0], {(0, 0): Behaviour(30.0, Answer.ACCEPT, 600.0)}))
    assert outcome.accepted_after == {0: 30.0}
    assert outcome.assignments == [(0, 30.0, 630.0)]


def test_a_decline_passes_the_referral_on_at_once_and_silence_after_the_ack_timeout() -> None:
    outcome = ideal(
        _scenario(
            [0.0],
            {
                (0, 0): Behaviour(10.0, Answer.DECLINE, 0.0),
                (0, 1): Behaviour(5.0, Answer.NONE, 0.0),
                (0, 2): Behaviour(20.0, Answer.ACCEPT, 60.0),
            },
        )
    )
    assert outcome.accepted_after == {0: 10.0 + ACK_TIMEOUT_S + 20.0}


def test_an_answer_later_than_the_ack_timeout_counts_as_none() -> None:
    late = Behaviour(ACK_TIMEOUT_S + 1, Answer.ACCEPT, 60.0)
    scenario = _scenario([0.0], {(0, 0): late, (0, 1): Behaviour(5.0, Answer.ACCEPT, 60.0)})
    assert ideal(scenario).accepted_after == {0: ACK_TIMEOUT_S + 5.0}


def test_a_referral_waits_until_a_coach_has_a_free_slot() -> None:
    """Every coach takes the first referrals at once; the next one waits for a visit to end."""
    busy = {
        (r, c): Behaviour(0.0, Answer.ACCEPT, 100.0 + r)
        for r in range(COACHES * CAPACITY)
        for c in range(COACHES)
    }
    last = COACHES * CAPACITY
    busy |= {(last, c): Behaviour(0.0, Answer.ACCEPT, 10.0) for c in range(COACHES)}
    arrivals = [0.0] * last + [1.0]
    outcome = ideal(_scenario(arrivals, busy))
    # The first slot frees at 100 s, when referral 0's visit ends.
    assert outcome.accepted_after[last] == 99.0
    assert most_at_once(outcome.assignments) == CAPACITY


def test_the_ideal_never_puts_a_coach_over_capacity_on_the_benchmarks_draws() -> None:
    outcome = ideal(draw(12))
    assert len(outcome.accepted_after) == 60
    assert most_at_once(outcome.offers + outcome.assignments) <= CAPACITY


def test_most_at_once_counts_per_coach_and_an_end_frees_its_slot_for_a_start() -> None:
    intervals = [(0, 0.0, 10.0), (0, 5.0, 15.0), (0, 15.0, 20.0), (1, 0.0, 30.0)]
    assert most_at_once(intervals) == 2
    assert most_at_once([(0, 0.0, 10.0), (0, 10.0, 20.0)]) == 1
    assert most_at_once([(0, 0.0, 10.0), (1, 0.0, 10.0), (0, 9.0, 11.0), (0, 9.5, 12.0)]) == 3
