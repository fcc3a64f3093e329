"""A decoding loop in which finished rows stop costing compute (`stage.drop_finished_rows`).

transformers' `generate` keeps the batch whole until its longest row ends: a row that sampled EOS at its third token
still goes through every layer for every later step. This loop is handed to `generate` as its `custom_generate`
callable (transformers' documented hook: `generate` does all its usual preparation -- generation config, special
tokens, logits processors, stopping criteria, cache -- then calls the loop), so everything but the loop is
transformers' own. After each step the rows that finished leave the batch, their cache rows with them
(`Cache.batch_select_indices`), and the next forward costs only the rows still generating.

Same distribution: every step's scores go through the prepared logits processors, a softmax and `torch.multinomial`
(argmax when not sampling), as in `generate`'s own loop, and the output has `generate`'s shape (finished rows padded
with the pad token up to the last step). While no row has finished the random draws are `generate`'s own; after the
first row leaves, each draw covers fewer rows, so the samples differ as between two seeds.

The plain loop runs (said once in the log) where rows cannot simply leave: a logits processor or stopping criterion
that is not per-row, a streamer, dict outputs, synced GPUs (ZeRO-3 needs every rank in every forward), a cache that
cannot drop rows, or model inputs tied to the batch in another layout (images, 3-D positions).
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any

import torch
from transformers import (
    EpsilonLogitsWarper,
    EtaLogitsWarper,
    MaxLengthCriteria,
    MaxTimeCriteria,
    MinLengthLogitsProcessor,
    MinNewTokensLengthLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    StopStringCriteria,
    SuppressTokensAtBeginLogitsProcessor,
    SuppressTokensLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)
from transformers.generation.stopping_criteria import EosTokenCriteria

from pipeline.train.trl_surface import reached, wrapped_generate

log = logging.getLogger(__name__)

# each reads only its own row of the ids and scores, so it gives the same result on a subset of the rows
_PER_ROW_PROCESSORS = (
    TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper,
    EpsilonLogitsWarper, EtaLogitsWarper, RepetitionPenaltyLogitsProcessor, NoRepeatNGramLogitsProcessor,
    NoBadWordsLogitsProcessor, SuppressTokensLogitsProcessor, SuppressTokensAtBeginLogitsProcessor,
    MinLengthLogitsProcessor, MinNewTokensLengthLogitsProcessor,
)
_PER_ROW_CRITERIA = (MaxLengthCriteria, EosTokenCriteria, StopStringCriteria, MaxTimeCriteria)
# per-row state a processor holds, one entry per row (generate passes each row's left padding): leaves with the row
_ROW_STATE = {RepetitionPenaltyLogitsProcessor: ("prompt_ignore_length",)}
# model inputs with one row per sequence that grow or stay with it; any other tensor input takes the plain loop
_ROW_INPUTS = ("attention_mask", "position_ids", "token_type_ids")
_said: set[str] = set()


def _plain_loop_reason(model: Any, logits_processor: Any, stopping_criteria: Any, generation_config: Any,
                       synced_gpus: bool, streamer: Any, model_kwargs: dict[str, Any]) -> str | None:
    if synced_gpus:
        return "synced GPUs: every rank runs every step"
    if streamer is not None:
        return "a streamer is attached"
    if generation_config.return_dict_in_generate:
        return "dict outputs were asked for"
    if getattr(model.config, "is_encoder_decoder", False):
        return "encoder-decoder model"
    if generation_config.prefill_chunk_size is not None:
        return "chunked prefill"
    # generate has made the cache by now (empty, or the caller's); rows leave it through batch_select_indices
    cache = model_kwargs.get("past_key_values")
    if not hasattr(cache, "batch_select_indices"):
        return f"the cache ({type(cache).__name__}) cannot drop rows"
    for processor in logits_processor:
        # the exact classes: a subclass may keep state of its own tied to the batch
        if type(processor) not in _PER_ROW_PROCESSORS:
            return f"logits processor {type(processor).__name__} is not known to be per-row"
    for criterion in stopping_criteria:
        if type(criterion) not in _PER_ROW_CRITERIA:
            return f"stopping criterion {type(criterion).__name__} is not known to be per-row"
    for key, value in model_kwargs.items():
        if isinstance(value, torch.Tensor) and (key not in _ROW_INPUTS or value.dim() != 2):
            return f"model input {key!r} is tied to the batch"
    return None


def compact_sample(model: Any, input_ids: torch.Tensor, logits_processor: Any, stopping_criteria: Any,
                   generation_config: Any, synced_gpus: bool = False, streamer: Any = None,
                   **model_kwargs: Any) -> torch.Tensor:
    """`generate`'s sampling/greedy loop, with finished rows dropped from the batch after every step."""
    reason = _plain_loop_reason(model, logits_processor, stopping_criteria, generation_config, synced_gpus,
                                streamer, model_kwargs)
    if reason is None:
        outputs = model._prefill(input_ids, generation_config, model_kwargs)
        return _decode(model, input_ids, outputs, logits_processor, stopping_criteria, generation_config,
                       model_kwargs)
    if reason not in _said:
        _said.add(reason)
        log.info("drop_finished_rows: generate's own loop (%s)", reason)
    return model._sample(input_ids, logits_processor=logits_processor, stopping_criteria=stopping_criteria,
                         generation_config=generation_config, synced_gpus=synced_gpus, streamer=streamer,
                         **model_kwargs)


def _decode(model: Any, input_ids: torch.Tensor, outputs: Any, logits_processor: Any, stopping_criteria: Any,
            generation_config: Any, model_kwargs: dict[str, Any]) -> torch.Tensor:
    reached["compact_sample"] += 1
    pad = generation_config._pad_token_tensor
    pad = 0 if pad is None else int(pad)
    rows = torch.arange(input_ids.size(0), device=input_ids.device)  # each live row's index in the output
    live_ids = input_ids
    columns: list[torch.Tensor] = []
    while True:
        logits = outputs.logits[:, -1].to(copy=True, dtype=torch.float32)
        scores = logits_processor(live_ids, logits)
        if generation_config.do_sample:
            tokens = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        else:
            tokens = torch.argmax(scores, dim=-1)
        live_ids = torch.cat([live_ids, tokens[:, None]], dim=-1)
        column = torch.full((input_ids.size(0),), pad, dtype=input_ids.dtype, device=input_ids.device)
        columns.append(column.index_copy_(0, rows, tokens))
        finished = stopping_criteria(live_ids, scores)
        if bool(finished.all()):
            break
        model_kwargs = model._update_model_kwargs_for_generation(outputs, model_kwargs)
        del outputs
        if bool(finished.any()):
            keep = (~finished).nonzero().squeeze(1)
            rows, live_ids = rows[keep], live_ids[keep]
            model_kwargs["past_key_values"].batch_select_indices(keep)
            for key in _ROW_INPUTS:
                if isinstance(model_kwargs.get(key), torch.Tensor):
                    model_kwargs[key] = model_kwargs[key][keep]
            for processor in logits_processor:
                for name in _ROW_STATE.get(type(processor), ()):
                    if isinstance(getattr(processor, name), torch.Tensor):
                        setattr(processor, name, getattr(processor, name)[keep])
        inputs = model.prepare_inputs_for_generation(live_ids, next_sequence_length=1, **model_kwargs)
        outputs = model(**inputs, return_dict=True)
    return torch.cat([input_ids, torch.stack(columns, dim=1)], dim=1)


def drop_finished_rows(model: torch.nn.Module) -> AbstractContextManager[None]:
    """While inside, `model.generate(...)` decodes with `compact_sample` unless the caller brings its own loop."""

    def wrap(original: Any) -> Any:
        def generate(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("custom_generate", compact_sample)
            return original(*args, **kwargs)
        return generate

    return wrapped_generate(model, wrap)
