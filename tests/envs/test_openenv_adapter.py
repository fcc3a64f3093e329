"""OpenEnv environments run unchanged (pipeline/envs/adapters/openenv.py): a local environment written the OpenEnv
way (reset() / step(Action) -> Observation with reward and done, pydantic Action and Observation; no server, no
network) becomes a TRL environment whose one tool takes the Action's fields, scored by the rewards its steps gave."""

from __future__ import annotations

import inspect

import pytest
from pydantic import BaseModel, Field

from pipeline.envs.adapters.openenv import openenv_environment
from pipeline.envs.loading import check_tool
from pipeline.envs.registry import build_agent, tool_methods


class WordAction(BaseModel):
    """Guess the hidden word."""

    word: str = Field(description="Your guess, one lowercase word.")
    metadata: dict = Field(default_factory=dict)


class WordObservation(BaseModel):
    feedback: str
    reward: float | None = None
    done: bool = False
    metadata: dict = Field(default_factory=dict)


class WordEnvironment:
    """An OpenEnv-style environment: the secret is 'apple'; three tries."""

    def reset(self, seed: int | None = None, episode_id: str | None = None) -> WordObservation:
        self.tries = 0
        return WordObservation(feedback="Guess the fruit I am thinking of.")

    def step(self, action: WordAction) -> WordObservation:
        self.tries += 1
        right = action.word == "apple"
        return WordObservation(feedback="right" if right else "wrong", reward=1.0 if right else -0.1,
                               done=right or self.tries >= 3)


def test_an_openenv_environment_plays_through_the_adapter() -> None:
    env_cls = openenv_environment(WordEnvironment, WordAction, tool_name="guess")
    assert env_cls.__name__ == "WordEnvironment"
    env = env_cls()
    assert env.reset(seed=0, prompt=[{"role": "user", "content": ""}]) == "Guess the fruit I am thinking of."
    assert env.guess(word="pear") == "wrong"
    assert env.guess(word="apple") == "right\n(The episode is over.)"
    assert env.guess(word="apple").startswith("The episode is over")  # a finished game is not stepped again
    assert env.get_reward() == pytest.approx(0.9)  # the sum of the steps' rewards


def test_the_tool_schema_is_the_actions_fields() -> None:
    env_cls = openenv_environment(WordEnvironment, WordAction, tool_name="guess")
    schema = check_tool(env_cls().guess, "guess")
    assert schema["function"]["name"] == "guess"
    assert schema["function"]["description"] == "Guess the hidden word."
    assert schema["function"]["parameters"]["properties"] == {
        "word": {"type": "string", "description": "Your guess, one lowercase word."}}  # metadata left out
    assert list(inspect.signature(env_cls.guess).parameters) == ["self", "word"]


def test_the_registry_builds_it_under_our_limits_by_dotted_path() -> None:
    agent = build_agent({"environment": {"openenv": {"env": f"{__name__}.WordEnvironment",
                                                     "action": f"{__name__}.WordAction", "tool_name": "guess"}},
                         "limits": {"timeout_s": 5, "max_calls_per_episode": 2}})
    env = agent.environment_factory()
    env.reset()
    assert [m.__name__ for m in tool_methods(type(env))] == ["guess"]
    env.guess(word="pear")
    env.guess(word="plum")
    with pytest.raises(Exception, match="tool-call limit of this episode is reached"):
        env.guess(word="apple")
    assert agent.stats["guess"].calls == 3
