"""`logging.level`: the verbosity of the root logger (Hydra configured its handlers) and of our own loggers; and
`logging.report_to`: which installed trackers the libraries may load."""

from __future__ import annotations

import logging
import sys

from pipeline.config.schema import LoggingConfig


def apply_log_level(config: LoggingConfig) -> None:
    level = logging.getLevelName(str(config.level).upper())
    logging.getLogger().setLevel(level)
    logging.getLogger("pipeline").setLevel(level)


def hide_unrequested_wandb(config: LoggingConfig) -> None:
    """Keep wandb out of a run that does not report to it. TRL imports wandb at import time whenever it is
    installed (trl.extras.profiling, the trainers), 3.7 s of every run's start on 2 cores, for a tracker the run
    never uses. A None entry in sys.modules makes `find_spec("wandb")` answer None, so transformers' and TRL's
    `is_wandb_available()` say no; called before TRL is first imported. Code that imports wandb itself in such a
    run gets an ImportError: add wandb to logging.report_to."""
    if "wandb" not in config.report_to and "wandb" not in sys.modules:
        sys.modules["wandb"] = None  # type: ignore[assignment]
