"""Guess the number: a multi-turn game as a TRL environment; it owns its state and its reward.

    GRPOTrainer(..., environment_factory=GuessNumber, train_dataset=placeholder_rows(64), reward_funcs=[])

TRL makes one instance per rollout and, before each episode, calls ``reset(**row)`` with the dataset row's fields
(the `prompt` too). The row's `seed` picks the secret, so the G rollouts of one prompt play the same game (GRPO
compares them) and a resumed run replays the same games; a row without one draws from the instance's own RNG
(kept in each checkpoint: pipeline/train/checkpoint/environment_state.py).
``reset`` returns the rules, which TRL appends to the row's last user message; `placeholder_rows` (loading.py)
makes rows with an empty user message and a seed each. (TRL's own placeholder rows, made when train_dataset is None,
carry no seed: every game then comes from the instance RNG.) Each public method other than reset/get_reward is a
tool: here only ``guess``. ``get_reward()`` scores the finished episode; TRL logs it under the class name, weight 1.
"""

from __future__ import annotations

import random
from typing import Any


class GuessNumber:
    """Find a secret whole number with higher/lower hints."""

    def __init__(self, low: int = 1, high: int = 100, max_guesses: int = 7, turn_penalty: float = 0.05,
                 seed: int | None = None) -> None:
        if not low < high:
            raise ValueError(f"GuessNumber needs low < high, got low={low}, high={high}")
        if max_guesses < 1 or not 0 <= turn_penalty < 1:
            raise ValueError(f"GuessNumber needs max_guesses >= 1 and 0 <= turn_penalty < 1, got {max_guesses}, "
                             f"{turn_penalty}")
        self.low, self.high, self.max_guesses, self.turn_penalty = low, high, max_guesses, turn_penalty
        self._rng = random.Random(seed)
        self._secret: int | None = None
        self.guesses: list[int] = []
        self.solved = False
        self.late_calls = 0  # guesses made after the game was over, charged like extra guesses

    def reset(self, seed: int | None = None, **row: Any) -> str:
        """Starts a game: the secret from the row's seed (or this instance's RNG); returns the rules."""
        rng = random.Random(seed) if seed is not None else self._rng
        self._secret = rng.randint(self.low, self.high)
        self.guesses, self.solved, self.late_calls = [], False, 0
        self._range = (self.low, self.high)  # where the secret can still be, after the hints so far
        return (f"I am thinking of a whole number between {self.low} and {self.high}. Find it by calling the "
                f"`guess` tool with a number; after each guess I say whether the secret is higher or lower. You have "
                f"{self.max_guesses} guesses.")

    def guess(self, number: int) -> str:
        """Guess the secret number.

        Args:
            number: Your guess, a whole number within the range given in the rules.

        Returns:
            "higher" or "lower" (where the secret is compared with your guess) and the range the secret is in
            after every hint so far, or a message that you found it.
        """
        if self._secret is None:
            return "Error: the game has not started."
        if self.solved or len(self.guesses) >= self.max_guesses:
            self.late_calls += 1
            return "The game is over; give your final answer."
        if isinstance(number, str) and number.strip().lstrip("+-").isdigit():  # a model's "42" for 42
            number = int(number)
        if isinstance(number, bool) or not isinstance(number, (int, float)) or number != int(number):
            return f"Error: the guess must be a whole number, got {number!r}."
        number = int(number)
        self.guesses.append(number)
        left = self.max_guesses - len(self.guesses)
        if number == self._secret:
            self.solved = True
            return f"Correct! The number is {number}. You found it in {len(self.guesses)} guesses."
        hint = "higher" if self._secret > number else "lower"
        if left == 0:
            return f"{hint}. That was your last guess; the number was {self._secret}."
        low, high = self._range
        self._range = (max(low, number + 1), high) if hint == "higher" else (low, min(high, number - 1))
        return f"{hint}: it is between {self._range[0]} and {self._range[1]} ({left} guesses left)"

    def get_reward(self) -> float:
        """1 for finding the number, less `turn_penalty` per extra guess (at least 0.5); 0 when not found. A guess
        after the game is over counts as an extra guess: otherwise calling on after "Correct!" costs nothing, and a
        model that learned to win keeps taking turns it does not need."""
        if not self.solved:
            return 0.0
        return max(0.5, 1.0 - self.turn_penalty * (len(self.guesses) - 1 + self.late_calls))

