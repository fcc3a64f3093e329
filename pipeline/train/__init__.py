"""Training around TRL, one room per concern. Imports go one way (tests/sanity checks it): stages may use every
room; observe uses checkpoint, model, levers; model uses levers; checkpoint uses runtime; all may use trl_surface;
nothing here imports pipeline.launch or pipeline.tools.

    stages/      one runner per stage (sft, dpo, grpo, ...), chain; prepare.py -> trl_args.py -> finish.py around them
    model/       build the policy/reference (hub id, path, GGUF, LoRA, quantization), chat templates, sharded loading
    levers/      every speed and memory lever and the one GRPO trainer leaf that switches them (LeveredGRPOTrainer)
    checkpoint/  complete-or-absent checkpoints, their on-disk layouts, the final/best saves, resume=auto
    observe/     what a run shows: TensorBoard/wandb callbacks, eval during training, held-out accuracy, pass@k, plots
    runtime/     process-level guards: distributed set-up and timeouts, NaN guard
    trl_surface  the fence: every private TRL/transformers name we touch, listed with its owner and why
"""
