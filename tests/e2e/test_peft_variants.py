"""PEFT variants through pipeline/run.py: one sweep of 2-step tiny SFT runs over peft.init (pissa, olora,
gaussian) x peft.use_dora, all with rsLoRA, modules_to_save and target modules by name; PiSSA/OLoRA with DoRA are
refused by validation (recorded, the sweep goes on), every other job trains and saves an adapter that loads."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors import safe_open

from tests.helpers.runs import TINY, run_pipeline


def test_each_peft_variant_trains_two_steps_and_saves_what_it_says(tmp_path: Path) -> None:
    proc = run_pipeline(
        ["-m", *TINY, "stage=sft", "stage.batch_size=8", "logging.samples_every=0", "peft.init=pissa,olora,gaussian",
         "peft.use_dora=true,false", "peft.use_rslora=true", "peft.modules_to_save=[norm]",
         "peft.target_modules=[q_proj,v_proj]", f"paths.output_root={tmp_path / 'out'}",
         f"paths.cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    [summary] = list((tmp_path / "out").rglob("sweep_summary.json"))
    rows = {" ".join(row["swept"]).lower(): row for row in json.loads(summary.read_text())}  # Hydra: True
    for init in ("pissa", "olora"):
        refused = rows[f"peft.init={init} peft.use_dora=true"]
        assert refused["status"] == "refused" and "DoRA's magnitudes" in refused["reason"]
    trained = {k: r for k, r in rows.items() if k not in {"peft.init=pissa peft.use_dora=true",
                                                             "peft.init=olora peft.use_dora=true"}}
    assert len(trained) == 4 and all(r["status"] == "done" and r["steps"] == 2 for r in trained.values())
    for swept, row in trained.items():
        final = Path(row["final_dir"])
        config = json.loads((final / "adapter_config.json").read_text())
        assert config["use_rslora"] and config["modules_to_save"] == ["norm"], swept
        assert sorted(config["target_modules"]) == ["q_proj", "v_proj"], swept
        assert config["use_dora"] == ("use_dora=true" in swept), swept
        with safe_open(str(final / "adapter_model.safetensors"), "pt") as f:
            names = list(f.keys())
        assert any("q_proj.lora_A" in n for n in names) and not any("k_proj" in n for n in names), swept
        assert any("norm" in n and "modules_to_save" not in n and "lora" not in n for n in names), swept
        assert any("lora_magnitude" in n for n in names) == config["use_dora"], swept
        if "pissa" in swept or "olora" in swept:
            # converted onto the original base: a plain LoRA of rank 2r, no decomposition at load
            assert config["init_lora_weights"] is True and config["r"] == 32, swept
            assert (Path(row["dir"]) / "peft_init" / "adapter_model.safetensors").exists()
        else:
            assert config["init_lora_weights"] == "gaussian" and config["r"] == 16, swept
