"""Turn one finished run (its TensorBoard scalars, as TRL logged them) into throughput figures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cases import Case
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


@dataclass
class Measurement:
    side: str
    steps: int
    train_runtime_s: float
    samples_per_s: float
    # non-padding tokens through the model per second (SFT/DPO: TRL's num_input_tokens_seen; GRPO: num_tokens)
    tokens_per_s: float
    # completion tokens generated per second of training (GRPO only)
    gen_tokens_per_s: float
    step_time_s: float
    peak_mem_gb: float
    wall_s: float
    # model FLOPs utilisation on GPU: 6 * parameters * tokens/s over the device's dense bf16 peak; 0 elsewhere
    mfu: float = 0.0

    def __str__(self) -> str:
        return (f"{self.steps} steps, {self.step_time_s:.2f} s/step, {self.samples_per_s:.2f} samples/s, "
                f"{self.tokens_per_s:.0f} tok/s, peak {self.peak_mem_gb:.2f} GB, wall {self.wall_s:.0f} s")


def scalars(tb_dir: Path) -> dict[str, list[float]]:
    values: dict[str, list[float]] = {}
    for events_dir in {p.parent for p in tb_dir.rglob("events.out.tfevents.*")}:
        acc = EventAccumulator(str(events_dir))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    return values


def read_run(out: Path, side: str, case: Case, *, peak_mem_gb: float, wall_s: float) -> Measurement:
    logged = scalars(out / "tb")
    if "train/train_runtime" not in logged:
        raise SystemExit(f"{side}: no train/train_runtime in {out / 'tb'}; did training finish?")
    runtime = logged["train/train_runtime"][-1]
    steps = len(logged.get("train/loss", []))
    if case.stage == "grpo":
        tokens = logged.get("train/num_tokens", [0.0])[-1]
        generated = sum(length * case.batch for length in logged.get("train/completions/mean_length", []))
    else:
        tokens = logged.get("train/num_input_tokens_seen", [0.0])[-1]
        generated = 0.0
    return Measurement(
        side=side, steps=steps, train_runtime_s=runtime,
        samples_per_s=steps * case.batch / runtime, tokens_per_s=tokens / runtime,
        gen_tokens_per_s=generated / runtime, step_time_s=runtime / max(steps, 1),
        peak_mem_gb=peak_mem_gb, wall_s=wall_s,
    )


# dense bf16 tensor-core peak in FLOP/s by device-name fragment (vendor datasheets, SXM parts, no sparsity)
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "4090": 165e12, "3090": 71e12}


def peak_flops(device_name: str) -> float | None:
    return next((flops for key, flops in PEAK_BF16_FLOPS.items() if key in device_name), None)


def mfu(tokens_per_s: float, n_params: int, device_name: str) -> float:
    """6·N·tokens/s ÷ peak (the issue's definition; counts the full model even when only LoRA weights train)."""
    peak = peak_flops(device_name)
    return 6 * n_params * tokens_per_s / peak if peak else 0.0

