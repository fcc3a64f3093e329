"""What each data format's rows must hold: the columns that identify it and whether it carries a gold answer.

Read by the data converters (pipeline/data/formats.py) and by validation's column check on a file's first row.
"""

from __future__ import annotations

from pipeline.config.enums import DataFormat

# Detection order: the first format whose columns are all present wins (preference before prompt_completion
# and prompt_answer, whose columns are a subset of many preference files).
REQUIRED: dict[DataFormat, tuple[str, ...]] = {
    DataFormat.messages: ("messages",),
    DataFormat.alpaca: ("instruction", "output"),
    DataFormat.preference: ("prompt", "chosen", "rejected"),
    DataFormat.unpaired: ("prompt", "completion", "label"),
    DataFormat.prompt_completion: ("prompt", "completion"),
    DataFormat.prompt_answer: ("prompt", "answer"),
    # seed formats (seed_formats.py)
    DataFormat.sharegpt: ("conversations",),
    DataFormat.llamafactory_dpo: ("instruction", "output"),
    DataFormat.mcq: ("question", "option_A", "option_B", "option_C", "option_D", "correct_answer"),
    DataFormat.s1k: ("question", "solution"),
    DataFormat.gsm8k: ("question", "answer"),
    DataFormat.scored_groups: ("prompt", "responses", "scores"),
}
# Formats whose rows carry a gold answer: they give held-out accuracy and feed the GRPO rewards.
ANSWER_FORMATS = (DataFormat.prompt_answer, DataFormat.mcq, DataFormat.s1k, DataFormat.gsm8k)
