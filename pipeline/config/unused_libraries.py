"""Libraries a run does not use are kept out of its process, so their import-time side effects never reach it.
Called by run.py once the plan is known, before TRL (and through it transformers, peft, accelerate) is imported.

- wandb (`logs.hide_unrequested_wandb`): 3.7 s of imports in a run whose logging.report_to does not name it.
- deepspeed: accelerate's `extract_model_from_parallel`, which TRL's trainers call on every model, imports it
  whenever it is installed, and importing it detects an accelerator: on a CPU machine that logs "Setting
  accelerator to CPU. If you have GPU or other accelerator, we were unable to detect it." in runs that never use
  DeepSpeed (and costs 1.3 s). Kept when a zero profile (or accelerate's own config) asks for DeepSpeed.
- bitsandbytes: peft imports it whenever it is installed; its CPU backend then warns "Failed to load CPU
  gemm_4bit_forward from kernels-community" (and the import costs ~4 s on 2 cores) in runs that neither quantize
  nor use one of its 8-bit/paged optimizers.

A None entry in sys.modules makes `importlib.util.find_spec` answer None, so the libraries' `is_*_available()` say
no; code that imports the module itself gets an ImportError naming it (a zero=/quant= profile then fixes it).
"""

from __future__ import annotations

import os
import sys

from pipeline.config.enums import QuantMethod
from pipeline.config.logs import hide_unrequested_wandb
from pipeline.config.plan import RunPlan
from pipeline.config.schema import RunConfig

# transformers' optimizer names served by bitsandbytes (adamw_bnb_8bit, paged_adamw_32bit, lion_8bit, ademamix...)
_BNB_OPTIMS = ("bnb", "8bit", "paged", "lion", "ademamix")


def hide(name: str) -> None:
    if name not in sys.modules:  # already imported (a test, an earlier stage): nothing to keep out
        sys.modules[name] = None  # type: ignore[assignment]


def uses_deepspeed(plan: RunPlan) -> bool:
    accelerate_says = os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true", "yes")
    return accelerate_says or any(p.ds_config is not None for p in (plan, *plan.steps))


def wants_bitsandbytes(cfg: RunConfig) -> bool:
    """A quantized base, or one of bitsandbytes' 8-bit/paged optimizers (a chain's own stage node has none)."""
    optim = str(getattr(cfg.stage, "optim", ""))
    return cfg.quant.method != QuantMethod.none or any(k in optim for k in _BNB_OPTIMS)


def uses_bitsandbytes(plan: RunPlan) -> bool:
    return any(wants_bitsandbytes(p.cfg) for p in (plan, *plan.steps))


def hide_unused_libraries(plan: RunPlan, sweep: bool = False) -> None:
    """`sweep`: Hydra runs a local sweep's jobs one after another in this process, and a later job may need what
    this one does not (quant=none,nf4): nothing but wandb is kept out then."""
    hide_unrequested_wandb(plan.cfg.logging)
    if sweep:
        return
    if not uses_deepspeed(plan):
        hide("deepspeed")
    if not uses_bitsandbytes(plan):
        hide("bitsandbytes")
