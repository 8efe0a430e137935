"""The retry schedule is a pure function of the attempt number (issue 3)."""

from __future__ import annotations

import pytest

from outpost.config import DEFAULT_MAX_LIFETIME, DEFAULT_RETRY_SCHEDULE
from outpost.delivery.backoff import delay_for_attempt, next_attempt_at

MIN, HOUR = 60, 3600


def test_default_schedule_1_5_15_30_min_1_2_4_h_then_every_4_h() -> None:
    delays = [delay_for_attempt(n) for n in range(1, 12)]
    assert delays == [1 * MIN, 5 * MIN, 15 * MIN, 30 * MIN, 1 * HOUR, 2 * HOUR, 4 * HOUR,
                      4 * HOUR, 4 * HOUR, 4 * HOUR, 4 * HOUR]
    assert DEFAULT_RETRY_SCHEDULE == (60, 300, 900, 1800, 3600, 7200, 14400)


def test_jitter_is_plus_or_minus_ten_percent_from_the_callers_rng() -> None:
    assert delay_for_attempt(1, jitter=0.0) == pytest.approx(54)
    assert delay_for_attempt(1, jitter=0.5) == pytest.approx(60)
    assert delay_for_attempt(1, jitter=0.999999) == pytest.approx(66, abs=1e-3)
    assert delay_for_attempt(9, jitter=0.0) == pytest.approx(4 * HOUR * 0.9)


def test_attempts_are_numbered_from_one() -> None:
    with pytest.raises(ValueError):
        delay_for_attempt(0)


def test_a_custom_schedule_repeats_its_last_step() -> None:
    assert [delay_for_attempt(n, (2, 4, 8)) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 8, 8]


def test_next_attempt_inside_the_lifetime() -> None:
    assert next_attempt_at(1000.0, 1, deliver_until=2000.0) == pytest.approx(1060)


def test_the_last_attempt_is_at_the_end_of_the_lifetime() -> None:
    # 3 h left and a 4 h step: one more attempt just before the lifetime ends, not expiry now.
    assert next_attempt_at(1000.0, 7, deliver_until=1000.0 + 3 * HOUR) == pytest.approx(1000 + 3 * HOUR - 1)
    assert next_attempt_at(1000.0, 7, deliver_until=1000.0 + 4 * HOUR) == pytest.approx(1000 + 4 * HOUR - 1)
    assert next_attempt_at(1000.0, 7, deliver_until=1000.0 + 4 * HOUR + 2) == pytest.approx(1000 + 4 * HOUR)


def test_no_next_attempt_once_the_lifetime_is_over() -> None:
    assert next_attempt_at(1999.0, 3, deliver_until=2000.0) is None  # the capped last attempt
    assert next_attempt_at(2500.0, 3, deliver_until=2000.0) is None
    assert next_attempt_at(1998.5, 3, deliver_until=2000.0) == pytest.approx(1999.0)


def test_the_default_lifetime_is_two_days_and_holds_about_eighteen_attempts() -> None:
    assert DEFAULT_MAX_LIFETIME == 2 * 86400
    now, n = 0.0, 1
    while (at := next_attempt_at(now, n, DEFAULT_MAX_LIFETIME)) is not None:
        now, n = at, n + 1
    # 7 h 51 min for the first seven delays, then every 4 h up to 47 h 51 min, then one last
    # attempt a second before the 48 h lifetime ends: 7 + 10 + 1 delays.
    assert n == 19 and now == pytest.approx(DEFAULT_MAX_LIFETIME - 1)


def test_a_release_is_never_retried_at_once_and_backs_off() -> None:
    from outpost.delivery.backoff import delay_for_release

    delays = [delay_for_release(n) for n in range(1, 9)]
    assert delays == [10, 30, 60, 120, 300, 900, 900, 900]  # capped at SQS's longest delay
    assert min(delays) > 0
    with pytest.raises(ValueError):
        delay_for_release(0)
