"""The speed levers under TRL's tool_mask (multi-turn completions whose tool-result tokens are not the model's):
the shared-prefix forwards give TRL's per-row loss and gradients on a batch with tool results, tool-result tokens get
exactly zero gradient on both paths, and a tool run turns off drop_finished_rows with one log line."""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM
from trl import GRPOConfig

from pipeline.envs.calculator import calculate
from pipeline.envs.templates import ensure_response_schema
from pipeline.train.levers.grpo_trainer import GRPOLevers, LeveredGRPOTrainer
from pipeline.train.trl_surface import reached
from tests.helpers.runs import REPO

TOKENIZER = REPO / "pipeline" / "assets" / "smollm2_tokenizer"
TEMPLATE = REPO / "pipeline" / "assets" / "chat_templates" / "qwen2.5.jinja"
RTOL = 1e-5


def tool_trainer(tmp_path, tools: bool = True, **levers: bool) -> LeveredGRPOTrainer:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    tokenizer.chat_template = TEMPLATE.read_text()  # SmolLM2's own template renders no tools
    ensure_response_schema(tokenizer)
    torch.manual_seed(0)
    config = Qwen3Config(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=256)
    config._attn_implementation = "sdpa"
    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, per_device_train_batch_size=4, num_generations=4,
                      max_completion_length=12, report_to="none", max_steps=1, bf16=False)
    trainer = LeveredGRPOTrainer(
        model=Qwen3ForCausalLM(config), args=args, processing_class=tokenizer,
        reward_funcs=lambda completions, **_: [float(len(c)) for c in completions],
        train_dataset=Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 12 * 30?"}]}] * 2),
        tools=[calculate] if tools else None, levers=GRPOLevers(**levers),
    )
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() around each step
    return trainer


def tool_batch(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two prompts (3 and 5 tokens, left-padded) x 4 completions, rows shuffled as TRL does; three completions hold a
    tool result (tool_mask 0) between the model's call and its answer, TRL's padding of the mask is 1."""
    gen = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(5, 100, (3,), generator=gen), torch.randint(5, 100, (5,), generator=gen)]
    lengths = [12, 1, 9, 4, 2, 12, 7, 3]
    tool_spans = {0: (3, 8), 2: (2, 6), 5: (4, 11)}  # completion row -> tool-result tokens [start, end)
    order = [5, 0, 7, 2, 1, 4, 6, 3]
    prompt_ids, prompt_mask = torch.zeros(8, 6, dtype=torch.long), torch.zeros(8, 6, dtype=torch.long)
    completion_ids = torch.randint(5, 100, (8, 12), generator=gen)
    completion_mask = torch.zeros(8, 12, dtype=torch.long)
    tool_mask = torch.ones(8, 12, dtype=torch.long)
    for row, source in enumerate(order):
        prompt = prompts[source // 4]
        prompt_ids[row, 6 - len(prompt):] = prompt
        prompt_mask[row, 6 - len(prompt):] = 1
        completion_mask[row, : lengths[source]] = 1
        if source in tool_spans:
            start, end = tool_spans[source]
            tool_mask[row, start:end] = 0
    return {
        "prompt_ids": prompt_ids, "prompt_mask": prompt_mask,
        "completion_ids": completion_ids * completion_mask, "completion_mask": completion_mask,
        "tool_mask": tool_mask,
        # no old log-probs: the ratio is 1 (TRL takes the current ones, detached), so no token is clipped to zero
        "advantages": torch.randn(8, generator=gen),
        "num_items_in_batch": (completion_mask * tool_mask).sum(),
    }


def loss_logps_and_grads(trainer: LeveredGRPOTrainer, batch: dict[str, torch.Tensor]) -> tuple:
    """TRL's loss on the batch, the gradient of the loss with respect to each completion token's log-prob, and the
    weights' gradients."""
    captured = {}
    forward = trainer._get_per_token_logps_and_entropies

    def keep(*args, **kwargs):
        logps, entropies, aux = forward(*args, **kwargs)
        logps.retain_grad()
        captured["logps"] = logps
        return logps, entropies, aux

    trainer._get_per_token_logps_and_entropies = keep
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    loss.backward()
    del trainer._get_per_token_logps_and_entropies
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.detach(), captured["logps"].grad, grads


def test_shared_prefix_gives_trls_loss_and_gradients_with_tool_results(tmp_path) -> None:
    trainer = tool_trainer(tmp_path, shared_prefix=True)
    assert trainer.levers.shared_prefix  # kept in tool runs
    batch = tool_batch()
    results = []
    for shared in (False, True):
        trainer.levers = dataclasses.replace(trainer.levers, shared_prefix=shared)
        packed = reached["_get_per_token_logps_and_entropies"]
        results.append(loss_logps_and_grads(trainer, batch))
        assert (reached["_get_per_token_logps_and_entropies"] > packed) == shared  # the packed path ran
    (loss_row, _, grads_row), (loss_shared, _, grads_shared) = results
    assert torch.isfinite(loss_row) and loss_row != 0
    torch.testing.assert_close(loss_shared, loss_row, rtol=RTOL, atol=RTOL * float(loss_row.abs()))
    assert grads_row.keys() == grads_shared.keys() and grads_row
    for name, grad in grads_row.items():
        torch.testing.assert_close(grads_shared[name], grad, rtol=RTOL, atol=RTOL * float(grad.abs().max()) + 1e-12)


@pytest.mark.parametrize("shared", [False, True])
def test_tool_result_tokens_get_zero_gradient(tmp_path, shared: bool) -> None:
    trainer = tool_trainer(tmp_path, shared_prefix=shared)
    batch = tool_batch()
    _, logp_grad, _ = loss_logps_and_grads(trainer, batch)
    width = logp_grad.size(1)  # trim_padding may have cut columns that are padding in every row
    tool = (batch["tool_mask"][:, :width] == 0) & (batch["completion_mask"][:, :width] == 1)
    model = (batch["tool_mask"][:, :width] == 1) & (batch["completion_mask"][:, :width] == 1)
    assert tool.sum() == 16 and bool((logp_grad[tool] == 0).all())
    assert (logp_grad[model] != 0).float().mean() > 0.9  # the model's own tokens do get gradient
    # control: without the tool mask the same tokens are trained on
    unmasked = {**batch, "tool_mask": torch.ones_like(batch["tool_mask"])}
    _, logp_grad, _ = loss_logps_and_grads(trainer, unmasked)
    assert (logp_grad[tool] != 0).float().mean() > 0.9


def test_a_tool_run_turns_drop_finished_rows_off_with_one_log_line(tmp_path, caplog) -> None:
    asked = {"shared_prefix": True, "prefill_once": True, "drop_finished_rows": True, "fast_sampling": True}
    with caplog.at_level(logging.INFO, logger="pipeline.train.levers.grpo_trainer"):
        trainer = tool_trainer(tmp_path, **asked)
    said = [r.getMessage() for r in caplog.records if r.name == "pipeline.train.levers.grpo_trainer"]
    assert len(said) == 1 and said[0].startswith("tools: drop_finished_rows off for this run")
    assert trainer.levers == GRPOLevers(shared_prefix=True, prefill_once=True, fast_sampling=True)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pipeline.train.levers.grpo_trainer"):
        plain = tool_trainer(tmp_path, tools=False, **asked)  # control: no tools, every lever stays
    assert plain.levers == GRPOLevers(**asked)
    assert not [r for r in caplog.records if r.name == "pipeline.train.levers.grpo_trainer"]
