"""Agents: tools and environments that TRL's GRPOTrainer runs in its own multi-turn loop (`tools=`,
`environment_factory=`), and what wraps them.

    calculator.py   calculate(expression): safe arithmetic through `ast`
    python_tool.py  run_python(code): a snippet in the reward=code sandbox
    search.py       SearchIndex(corpus).search(query): BM25 over a local JSONL corpus
    guess_number.py GuessNumber: a multi-turn game that owns its state and reward
    limits.py       limit_tool / limit_environment: time limit, output cut, call cap, faults as messages, counters
    isolation.py    where a limited call runs (thread or forkserver child)
    templates.py    ensure_response_schema(tokenizer): tool-call parsing for the templates we ship
    registry.py     build_agent(spec): the env group (AgentSpec.from_env) -> GRPOTrainer's tools / environment_factory
    loading.py      dotted paths, tool JSON schemas (checked before anything loads), pkg: paths, placeholder rows
    rewards.py      episode_reward (an environment's get_reward as a reward term), malformed_tool_calls
    adapters/       environments of other libraries (OpenEnv)

Nothing is imported here: each run pays only for the tools it uses.
"""
