"""`logging.level`: the verbosity of the root logger (Hydra configured its handlers) and of our own loggers."""

from __future__ import annotations

import logging

from pipeline.config.schema import LoggingConfig


def apply_log_level(config: LoggingConfig) -> None:
    level = logging.getLevelName(str(config.level).upper())
    logging.getLogger().setLevel(level)
    logging.getLogger("pipeline").setLevel(level)
