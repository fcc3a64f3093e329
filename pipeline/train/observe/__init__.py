"""What a run shows: monitoring.py (TensorBoard/wandb callbacks, completions table), eval_callback.py (eval every N
steps, best/), heldout.py (held-out accuracy before and after), pass_at_k.py, plots.py."""
