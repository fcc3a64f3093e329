"""A tool run's episode in the completions table: every turn in order, calls and tool results marked, and the
per-episode counts behind the trajectory/* scalars."""

from __future__ import annotations

from pipeline.train.observe.monitoring import completions_markdown
from pipeline.train.observe.trajectories import episode_counts, trajectory_text, turns

CALL = {"type": "function", "function": {"name": "calculate", "arguments": {"expression": "12 * 34"}}}
EPISODE = [
    {"role": "assistant", "content": "", "tool_calls": [CALL]},
    {"role": "tool", "name": "calculate", "content": "408"},
    {"role": "assistant", "content": "Let me check once more.", "tool_calls": [CALL, CALL]},
    {"role": "tool", "name": "calculate", "content": "408"},
    {"role": "tool", "name": "calculate", "content": "408"},
    {"role": "assistant", "content": "The answer is 408."},
]


def test_every_turn_shows_in_order_with_calls_and_results_marked() -> None:
    assert trajectory_text(EPISODE).splitlines() == [
        '-> call calculate({"expression": "12 * 34"})',
        "[tool result: calculate] 408",
        "Let me check once more.",
        '-> call calculate({"expression": "12 * 34"})',
        '-> call calculate({"expression": "12 * 34"})',
        "[tool result: calculate] 408",
        "[tool result: calculate] 408",
        "The answer is 408.",
    ]


def test_counts_are_per_episode_means_and_absent_for_plain_text_completions() -> None:
    one_turn = [{"role": "assistant", "content": "408"}]
    assert turns(EPISODE) == 3
    assert episode_counts([EPISODE, one_turn]) == {"trajectory/turns_mean": 2.0, "trajectory/tool_calls_mean": 1.5,
                                                   "trajectory/turns_max": 3.0}
    assert episode_counts(["408", "no idea"]) == {}


def test_the_table_gains_turn_and_call_columns_only_when_rows_have_them() -> None:
    plain = [{"prompt": "q", "completion": "a", "rewards": {"correctness": 1.0}}]
    assert completions_markdown(plain).splitlines()[0] == "| prompt | completion | correctness |"
    tools = [{**plain[0], "completion": trajectory_text(EPISODE), "turns": 3, "tool_calls": 3}]
    header, _, row = completions_markdown(tools).splitlines()
    assert header == "| prompt | completion | correctness | turns | tool_calls |"
    assert row.endswith("| 1 | 3 | 3 |") and "[tool result: calculate] 408<br>" in row
