"""Export a finished run as one standalone model: LoRA merged into the base, safetensors + tokenizer.

    python -m pipeline.tools.export outputs/grpo/RUN                   # -> outputs/grpo/RUN/export/
    python -m pipeline.tools.export outputs/grpo/RUN out=/models/mine force=true
    python -m pipeline.tools.export outputs/grpo/RUN which=best        # <run>/best/ -> outputs/grpo/RUN/export_best/
    python -m pipeline.tools.export outputs/grpo/RUN format=gguf       # + export/model.gguf (F32, llama.cpp & co.)

QLoRA runs (quant=nf4|int8) merge into the dequantized base: the adapter was trained against the quantized
weights, so those -- not the original full-precision ones -- are what it corrects. Full fine-tuning runs are
copied as they are. The export is written beside its target and renamed when complete; an existing export is
only replaced with force=true.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from pipeline.config.enums import QuantMethod
from pipeline.config.run_dir import RunDir, replacing
from pipeline.config.user_errors import UserError, reported
from pipeline.tools.gguf_export import GGUFExportError, write_gguf
from pipeline.tools.lean_start import keep_unused_libraries_out
from pipeline.tools.tuned import RunDirError, final_dir, is_adapter, load_base, run_config

log = logging.getLogger(__name__)


FORMATS = ("safetensors", "gguf")


class ExportError(UserError, RuntimeError):
    """The export cannot be written as asked; the message says how to proceed."""


def export_run(run_dir: Path, out: Path | None = None, force: bool = False, which: str = "final",
               fmt: str = "safetensors") -> Path:
    """Merge and save (format=gguf: also <out>/model.gguf); returns the export directory."""
    if fmt not in FORMATS:
        raise ExportError(f"format={fmt}: use format=safetensors or format=gguf.")
    cfg = run_config(run_dir)
    final = final_dir(run_dir, which)
    out = out or RunDir(run_dir).export_of(which)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists. Fix: force=true to replace it, or out=ANOTHER_DIR.")
    if is_adapter(final):
        base = load_base(cfg)
        if cfg.quant.method != QuantMethod.none:
            # transformers replaces the bitsandbytes layers by plain Linear layers holding the dequantized weights.
            base = base.dequantize()
            base.to(torch.float32)
        from peft import PeftModel  # why: peft imports bitsandbytes, kept out of the process when unused

        model = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(final), dtype=torch.float32)
    # A dequantized base still carries its quantization_config; the merged weights are plain tensors.
    if getattr(model.config, "quantization_config", None) is not None:
        del model.config.quantization_config
    with replacing(out) as partial:
        model.save_pretrained(str(partial), safe_serialization=True)
        AutoTokenizer.from_pretrained(str(final)).save_pretrained(str(partial))
        if fmt == "gguf":
            # written from the merged folder inside the partial, so the GGUF file and its source appear together
            write_gguf(partial)
    log.info("exported %s -> %s", final, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.tools.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("options", nargs="*", help="out=DIR (default <run>/export), force=true, which=final|best, "
                        "format=safetensors|gguf")
    args = parser.parse_args(argv)
    opts = dict(o.partition("=")[::2] for o in args.options)
    unknown = set(opts) - {"out", "force", "which", "format"}
    if unknown:
        parser.error(f"unknown option(s) {', '.join(sorted(unknown))}: use out=DIR, force=true, which=final|best, "
                     "format=safetensors|gguf.")
    force = opts.get("force", "false").lower() in ("1", "true", "yes")
    try:
        out = export_run(args.run_dir, Path(opts["out"]) if opts.get("out") else None, force,
                         opts.get("which", "final"), opts.get("format", "safetensors"))
    except (ExportError, GGUFExportError, RunDirError) as err:
        raise SystemExit(f"export refused: {err}") from None
    print(out)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    keep_unused_libraries_out(sys.argv[1:])  # before the model libraries load: no bitsandbytes a run did not use
    with reported():  # a user error: one block on stderr, exit 2
        main()
