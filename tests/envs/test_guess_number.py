"""The guess-the-number environment (pipeline/envs/guess_number.py): the row's seed fixes the secret, hints lead to
it, and the reward counts guesses."""

from __future__ import annotations

import pytest

from pipeline.envs.guess_number import GuessNumber


def play(env: GuessNumber) -> tuple[int, str]:
    low, high, reply = env.low, env.high, ""
    while True:
        guess = (low + high) // 2
        reply = env.guess(guess)
        if reply.startswith("Correct") or "over" in reply or "last guess" in reply:
            return guess, reply
        low, high = (guess + 1, high) if reply.startswith("higher") else (low, guess - 1)


def test_binary_search_wins_and_is_rewarded_by_guesses() -> None:
    env = GuessNumber(max_guesses=7)
    assert "between 1 and 100" in env.reset(seed=3)
    _, reply = play(env)
    assert reply.startswith("Correct")
    assert 0.5 <= env.get_reward() <= 1.0
    assert env.get_reward() == max(0.5, 1 - 0.05 * (len(env.guesses) - 1))


def test_guesses_after_the_win_cost_like_extra_guesses() -> None:
    env = GuessNumber(max_guesses=7)
    env.reset(seed=3)
    secret, _ = play(env)
    won = env.get_reward()
    assert "over" in env.guess(secret) and "over" in env.guess(1)
    assert env.get_reward() == pytest.approx(max(0.5, won - 2 * 0.05))
    env.reset(seed=3)
    play(env)
    assert env.get_reward() == won  # a new game starts uncharged


def test_the_seed_fixes_the_game_and_a_lost_game_scores_zero() -> None:
    a, b = GuessNumber(), GuessNumber()
    a.reset(seed=11)
    b.reset(seed=11)
    secret = play(a)[0]
    assert play(b)[0] == secret
    lost = GuessNumber(max_guesses=1)
    lost.reset(seed=11)
    lost.guess(secret + 1 if secret < 100 else secret - 1)
    assert lost.get_reward() == 0.0
    assert "over" in lost.guess(secret)


def test_bad_moves_are_answered_not_raised() -> None:
    env = GuessNumber()
    assert env.guess(5).startswith("Error: the game has not started")
    env.reset(seed=1)
    assert env.guess("forty").startswith("Error: the guess must be a whole number")
    assert not env.guess("42").startswith("Error")  # a model's "42" for 42


def test_each_hint_states_the_range_left_after_every_hint_so_far() -> None:
    env = GuessNumber(low=1, high=32, max_guesses=7)
    env.reset(seed=0)  # its secret is not 16
    first = env.guess(16)
    assert first.startswith(("higher: it is between 17 and 32", "lower: it is between 1 and 15"))
    # a guess outside the range left narrows nothing: the range is the tightest of all hints
    wide = env.guess(40 if first.startswith("higher") else -5)
    assert wide.split(" (")[0].endswith("between 17 and 32" if first.startswith("higher") else "between 1 and 15")
