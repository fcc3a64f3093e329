"""Speed and memory levers, each exact against TRL's own path (tests compare numbers): grpo_trainer.py is the one GRPO
trainer leaf switching them; shared_prefix*/prefix_mask (each prompt forwarded once), prefill_once, compact_decoding,
merged_lora, packed_linears, fast_sampling, bf16_frozen, trim_padding, lean_lm_head, zero3_slices. With
../trl_surface.py the only place a private library name may appear (tests/sanity checks it)."""
