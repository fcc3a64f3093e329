"""SFT's stage decisions: padding-free only when every row fits."""

from __future__ import annotations

import pytest

from pipeline.config.checks import to_run_config
from pipeline.train.stages.sft import use_padding_free
from tests.helpers.runs import compose_config


@pytest.mark.parametrize(("overrides", "long_rows", "expected"), [
    ([], 0, True),
    (["stage.padding_free=false"], 0, False),
    (["stage.packing=true"], 0, False),
    # rows over max_length: TRL must truncate them, which it cannot do padding-free
    ([], 3, False),
    # ... unless they were dropped
    (["data.on_bad_row=skip"], 3, True),
])
def test_padding_free_only_when_every_row_fits(overrides, long_rows, expected) -> None:
    cfg = to_run_config(compose_config(["stage=sft", *overrides]))
    assert use_padding_free(cfg, long_rows) is expected
