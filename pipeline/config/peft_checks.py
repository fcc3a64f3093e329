"""The LoRA variants of the `peft` group (DoRA, rsLoRA, PiSSA / OLoRA / Gaussian init, modules_to_save, target
modules), as peft's own LoraConfig arguments, and checked by building that LoraConfig before anything loads.

peft (and so torch) is imported only when a variant is asked for: a plain LoRA run validates without it.
"""

from __future__ import annotations

from typing import Any

from pipeline.config.derived import fsdp2
from pipeline.config.enums import PeftInit, PeftMethod, QuantMethod
from pipeline.config.schema import PeftConfig, RunConfig

# inits that move the base weights' principal part into the adapter (the trained base is no longer the original)
MUTATING = (PeftInit.pissa, PeftInit.olora)


def lora_kwargs(peft: PeftConfig) -> dict[str, Any]:
    """peft.LoraConfig keyword arguments for our `peft` group (task_type aside)."""
    targets = peft.target_modules if isinstance(peft.target_modules, str) else list(peft.target_modules)
    return {
        "r": peft.r, "lora_alpha": peft.alpha, "lora_dropout": peft.dropout, "target_modules": targets,
        "use_dora": peft.use_dora, "use_rslora": peft.use_rslora,
        "init_lora_weights": True if peft.init == PeftInit.default else peft.init.value,
        "modules_to_save": list(peft.modules_to_save) or None,
    }


def _asks_for_a_variant(peft: PeftConfig) -> bool:
    return peft.use_dora or peft.use_rslora or peft.init != PeftInit.default or bool(peft.modules_to_save)


def peft_problems(cfg: RunConfig) -> list[str]:
    peft = cfg.peft
    if peft.method != PeftMethod.lora:
        if _asks_for_a_variant(peft):
            return [f"peft={peft.method.value} with LoRA variant keys (peft.use_dora / use_rslora / init / "
                    "modules_to_save): they apply to LoRA only. Use peft=lora, or drop them."]
        return []
    problems = []
    if peft.r < 1 or not 0 <= peft.dropout < 1:
        problems.append(f"peft.r={peft.r}, peft.dropout={peft.dropout}: the rank must be >= 1 (e.g. peft.r=16) and "
                        "the dropout in [0, 1) (e.g. peft.dropout=0.05).")
    if not isinstance(peft.target_modules, str) and not list(peft.target_modules):
        problems.append("peft.target_modules=[]: name the modules to adapt (e.g. [q_proj,v_proj]) or all-linear.")
    if peft.init in MUTATING and cfg.quant.method != QuantMethod.none:
        problems.append(f"peft.init={peft.init.value} with quant={cfg.quant.method.value}: PiSSA/OLoRA decompose "
                        "each base weight, which a 4/8-bit base does not hold in full precision. Use quant=none, "
                        "or peft.init=default.")
    if peft.init in MUTATING and peft.use_dora:
        problems.append(f"peft.init={peft.init.value} with peft.use_dora=true: final/ is converted onto the original "
                        "base through peft's conversion, which covers LoRA's A and B but not DoRA's magnitudes "
                        "(computed from the changed base), so the saved adapter would be wrong. Use one of them.")
    if peft.init in MUTATING and (cfg.zero.stage >= 3 or fsdp2(cfg)):
        problems.append(f"peft.init={peft.init.value} with zero={cfg.zero.name}: the decomposition and the "
                        "conversion of final/ need whole weights, which ZeRO-3 and FSDP2 shard. Use zero=zero2, or "
                        "peft.init=default.")
    if not _asks_for_a_variant(peft) or problems:
        return problems
    from peft import LoraConfig

    kwargs = lora_kwargs(peft)
    try:
        LoraConfig(**kwargs, task_type="CAUSAL_LM")
    except (ValueError, TypeError, ImportError) as err:
        problems.append(f"peft's LoraConfig refuses peft={kwargs}: {err} Fix the peft.* key it names "
                        "(conf/peft/lora.yaml documents each).")
    return problems


def target_problems(model: Any, peft: PeftConfig) -> list[str]:
    """peft.target_modules / modules_to_save names that no module of the loaded model ends with."""
    if peft.method != PeftMethod.lora:
        return []
    names = {name.rpartition(".")[2] for name, _ in model.named_modules() if name}
    linear = sorted({name.rpartition(".")[2] for name, m in model.named_modules() if type(m).__name__ == "Linear"})
    problems = []
    wanted = [] if isinstance(peft.target_modules, str) else list(peft.target_modules)
    for key, values in (("target_modules", wanted), ("modules_to_save", list(peft.modules_to_save))):
        missing = [v for v in values if v.rpartition(".")[2] not in names]
        if missing:
            problems.append(f"peft.{key}={values}: the model has no module named {', '.join(missing)}. Its linear "
                            f"layers are {', '.join(linear)}; use some of them, or peft.target_modules=all-linear.")
    return problems
