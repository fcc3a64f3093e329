"""A user's own option file needs only what differs from the schema: a group whose `name` is left ??? (RewardConfig,
ModelConfig, DataConfig...) takes the name of the option file Hydra picked (`reward=mine` -> reward.name=mine)."""

from __future__ import annotations

from collections.abc import Mapping

from omegaconf import DictConfig, OmegaConf


def fill_option_names(cfg: DictConfig, choices: Mapping[str, str | None]) -> None:
    """Hydra's runtime choices ({group: option}) name each group's option; nested groups (hydra/..., a/b) and
    unselected ones are left alone."""
    for group, choice in choices.items():
        if not choice or "/" in group or group.startswith("hydra"):
            continue
        node = cfg.get(group) if group in cfg else None
        if isinstance(node, DictConfig) and OmegaConf.is_missing(node, "name"):  # `in` says no for ???
            node.name = choice.rpartition("/")[2]
