"""Keep credentials out of the command line: Hydra records every override in <run>/.hydra/overrides.yaml (and the
composed config in .hydra/config.yaml), so a token given as `key=value` would be written to disk with the run.

Tokens are read only from the environment by the libraries that need them (HF_TOKEN by huggingface_hub,
WANDB_API_KEY by wandb); no config key holds one. This check runs on sys.argv before Hydra sees it.
"""

from __future__ import annotations

import os
import re
import sys

# Environment variables whose values are credentials.
SECRET_ENV = re.compile(r"(TOKEN|API_KEY|APIKEY|SECRET|PASSWORD)$", re.IGNORECASE)
# Override keys that name a credential, e.g. +hf_token=..., +logging.wandb_api_key=...
SECRET_KEY = re.compile(r"(token|api_?key|secret|password)$", re.IGNORECASE)
# Values shaped like a Hugging Face token (a wandb key is 40 hex digits, like a git revision: not matched by shape).
SECRET_VALUE = re.compile(r"^hf_[A-Za-z0-9]{30,}$")


def secret_overrides(argv: list[str]) -> list[str]:
    """The overrides in argv that carry a credential (by key name, by shape, or equal to a secret env value)."""
    secrets = {v for k, v in os.environ.items() if SECRET_ENV.search(k) and len(v) >= 8}
    found = []
    for arg in argv[1:]:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or arg.startswith("-"):
            continue
        if SECRET_KEY.search(key.rsplit(".", 1)[-1]) or SECRET_VALUE.match(value) or value in secrets:
            found.append(key)
    return found


def refuse_secret_overrides(argv: list[str]) -> None:
    found = secret_overrides(argv)
    if found:
        sys.exit(
            f"refused: override(s) {', '.join(found)} carry a credential, and Hydra writes every override to "
            "<run>/.hydra/overrides.yaml. Fix: export it instead (HF_TOKEN=... for the hub, WANDB_API_KEY=... for "
            "wandb); the libraries read it from the environment."
        )
