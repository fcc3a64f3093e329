"""lm-evaluation-harness on a finished run, against our own server (needs the `harness` extra: lm-eval[api]).

    python -m pipeline.tools.evaluate outputs/grpo/RUN harness=pipeline_heldout                # the run's held-out set
    python -m pipeline.tools.evaluate outputs/grpo/RUN harness=pipeline_heldout,pipeline_mcq harness.mcq=q.tsv \
        compare=base                                                                        # before / after, one table
    python -m pipeline.tools.evaluate outputs/grpo/RUN harness=pipeline_gsm8k harness.gsm8k=gsm8k/test.jsonl limit=100
    python -m pipeline.tools.evaluate outputs/grpo/RUN harness=my_task harness.include_path=my_tasks/ which=best

Each model (the base with compare=base, then the tuned or best one) is loaded once, served from a thread of this
process on 127.0.0.1 by pipeline.tools.serve's own server, and lm-eval is pointed at it as at any OpenAI-compatible
endpoint: `local-chat-completions` for generation tasks (the server applies the model's chat template, as held-out
evaluation does), `local-completions` for loglikelihood tasks (echo + logprobs over token ids from the model's own
tokenizer). Shipped tasks (harness_tasks/): pipeline_heldout (the run's held-out split, scored with the stage's
answer check), pipeline_gsm8k (a local GSM8K file), pipeline_mcq (our mcq format, as multiple choice). Their data is
written beside the run's eval/ with a task YAML that includes the shipped one, so the package stays read-only.

limit=N takes the first N documents of each task, batch_size=N is the server's max_batch (8), max_new_tokens=N the
held-out task's answer budget (else the run's stage.eval_max_new_tokens).

Writes <run>/eval/harness.json, per-document samples under eval/harness_samples/, a "harness" entry in
summary.json and TensorBoard scalars harness/<task>/<metric> in <run>/tb (the base at step 0, the tuned model at
its last step, the best one at its step): one chart shows before and after."""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from pipeline.config.run_dir import RunDir, write_json_atomic
from pipeline.config.schema import RunConfig

SHIPPED_DIR = Path(__file__).with_name("harness_tasks")
SHIPPED = ("pipeline_heldout", "pipeline_gsm8k", "pipeline_mcq")
LETTERS = ("A", "B", "C", "D")
log = logging.getLogger(__name__)


def evaluate_harness(run_dir: Path, cfg: RunConfig, loaders: dict[str, Any], out: Path, opts: dict) -> dict:
    """Run the tasks in opts["harness"] on each model of `loaders` ({name: () -> (model, tokenizer)})."""
    try:
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise SystemExit("harness=: lm-evaluation-harness is not installed. Fix: pip install -c constraints.txt "
                         "-e '.[harness]'") from None
    tasks = [t.strip() for t in str(opts["harness"]).split(",") if t.strip()]
    include = [str(_prepare_tasks(run_dir, cfg, tasks, out / "harness_tasks", opts))]
    if opts.get("harness.include_path"):
        user = Path(opts["harness.include_path"])
        if not user.is_dir():
            raise SystemExit(f"harness.include_path={user}: no such directory. Fix: a folder of task YAMLs.")
        include.append(str(user.resolve()))
    # lm-eval's own task list (thousands of YAMLs, most needing the hub) is indexed only when a task is not ours.
    manager = TaskManager(include_path=include, include_defaults=False)
    if any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=include, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise SystemExit(f"harness={','.join(unknown)}: no such lm-eval task. Fix: one of {', '.join(SHIPPED)}, a "
                         "task lm-eval ships, or a task YAML in harness.include_path=DIR.")
    models = {}
    for name, load in loaders.items():
        model, tokenizer = load()
        models[name] = _evaluate_model(model, tokenizer, name, tasks, manager, out / "harness_samples" / name, opts)
        del model
    report = {"run_dir": str(run_dir), "which": opts.get("which") or "final", "tasks": tasks, "models": models}
    write_json_atomic(out / "harness.json", report)
    _record(run_dir, report)
    return report


def _evaluate_model(model: Any, tokenizer: Any, name: str, tasks: list[str], manager: Any, samples: Path,
                    opts: dict) -> dict[str, dict[str, float]]:
    import lm_eval

    from pipeline.tools.serve import make_served
    from pipeline.tools.serving.process import served_in_thread

    served = make_served(model, tokenizer, f"harness-{name}", max_batch=opts.get("batch_size") or 8,
                         max_tokens=opts.get("max_new_tokens") or 256)
    scores: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tok_dir, served_in_thread(served) as url:
        # lm-eval counts a loglikelihood request's context tokens itself: with this model's own tokenizer.
        tokenizer.save_pretrained(tok_dir)
        for task in tasks:
            chat = _output_type(task, manager) == "generate_until"
            common = {"model": served.model_id, "max_retries": 1, "timeout": 3600}
            # Chat requests go one prompt each, concurrently, so the batcher groups them; completions go
            # several prompts a request.
            model_args = ({**common, "base_url": f"{url}/v1/chat/completions",
                           "num_concurrent": served.batcher.max_batch} if chat else
                          {**common, "base_url": f"{url}/v1/completions", "tokenizer": tok_dir,
                           "tokenizer_backend": "huggingface", "batch_size": served.batcher.max_batch,
                           "max_length": served.context})
            result = lm_eval.simple_evaluate(
                model="local-chat-completions" if chat else "local-completions", model_args=model_args,
                tasks=[task], task_manager=manager, limit=opts.get("limit"), log_samples=True,
                apply_chat_template=chat, system_instruction=_system_of(task, manager) if chat else None,
                bootstrap_iters=0)
            for leaf, metrics in result["results"].items():
                scores[leaf] = _metrics(metrics)
            _write_samples(samples, result.get("samples", {}))
    return scores


def _output_type(task: str, manager: Any) -> str:
    from lm_eval.tasks import get_task_dict

    kinds = {leaf.OUTPUT_TYPE for leaf in _leaves(get_task_dict([task], manager))}
    if len(kinds) != 1:
        raise SystemExit(f"harness={task}: a group mixing {sorted(kinds)} tasks. Fix: name its tasks one by one.")
    return kinds.pop()


def _leaves(tasks: dict) -> list[Any]:
    found = []
    for value in tasks.values():
        found += _leaves(value) if isinstance(value, dict) else [value]
    return found


def _system_of(task: str, manager: Any) -> str | None:
    # pipeline_heldout's rows may share a system prompt (data.system_prompt): lm-eval sends it as the system turn.
    if task != "pipeline_heldout":
        return None
    note = Path(manager.task_index[task].yaml_path).with_suffix(".system.txt")
    return note.read_text() if note.is_file() else None


def _metrics(raw: dict[str, Any]) -> dict[str, float]:
    # lm-eval keys metrics "name,filter"; the filter is named only where it is not lm-eval's "none"
    out = {}
    for key, value in raw.items():
        metric, _, where = key.partition(",")
        if where and "_stderr" not in metric and isinstance(value, (int, float)):
            out[metric if where == "none" else f"{metric}_{where}"] = float(value)
    return out


def _write_samples(folder: Path, samples: dict[str, list[dict]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for task, rows in samples.items():
        keep = ("doc_id", "doc", "target", "arguments", "resps", "filtered_resps")
        lines = [json.dumps({k: r.get(k) for k in keep} | {m: r[m] for m in r.get("metrics", []) if m in r},
                            ensure_ascii=False, default=str) for r in rows]
        (folder / f"{task}.jsonl").write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# ---- the shipped tasks' data, written for this run -----------------------------------------------------------

def _prepare_tasks(run_dir: Path, cfg: RunConfig, tasks: list[str], folder: Path, opts: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for task in set(tasks) & set(SHIPPED):
        data = folder / f"{task}.jsonl"
        extra: dict[str, Any] = {}
        if task == "pipeline_heldout":
            rows, system = _heldout_rows(run_dir, cfg, opts)
            tokens = opts.get("max_new_tokens") or cfg.stage.eval_max_new_tokens
            extra["generation_kwargs"] = {"until": [], "do_sample": False, "temperature": 0, "max_gen_toks": tokens}
            note = folder / f"{task}.system.txt"
            note.unlink(missing_ok=True)
            if system is not None:
                note.write_text(system)
        elif task == "pipeline_gsm8k":
            rows = _jsonl(_data_file(cfg, opts, "gsm8k", "gsm8k"))
        else:
            rows = _mcq_rows(_data_file(cfg, opts, "mcq", "mcq"))
        data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        # JSON is YAML: the task file includes the shipped one and names this run's data.
        spec = {"include": str(SHIPPED_DIR / f"{task}.yaml"), "task": task,
                "dataset_kwargs": {"data_files": {"test": str(data.resolve())}}, **extra}
        (folder / f"{task}.yaml").write_text(json.dumps(spec, indent=2) + "\n")
    return folder.resolve()


def _heldout_rows(run_dir: Path, cfg: RunConfig, opts: dict) -> tuple[list[dict], str | None]:
    from dataclasses import replace

    from pipeline.data.loader import load_stage_data

    if opts.get("eval_path"):
        cfg = replace(cfg, data=replace(cfg.data, eval_path=opts["eval_path"], eval_split=None, eval_size=0))
    problems = load_stage_data(cfg.data, cfg.stage.name, cfg.seed).eval_prompts
    if problems is None or not len(problems):
        raise SystemExit(f"harness=pipeline_heldout: {run_dir} has no held-out rows with answers (data="
                         f"{cfg.data.name}). Fix: eval_path=FILE, or train with data.eval_size=N or data.eval_path.")
    rows, systems = [], set()
    for prompt, answer in zip(problems["prompt"], problems["answer"], strict=True):
        turns = [t for t in prompt if t["role"] != "system"]
        systems.add(next((t["content"] for t in prompt if t["role"] == "system"), None))
        if len(turns) != 1 or turns[0]["role"] != "user":
            raise SystemExit("harness=pipeline_heldout: a held-out prompt has several turns; lm-eval's chat tasks "
                             "send one user turn. Fix: evaluate multi-turn data without harness=.")
        rows.append({"question": turns[0]["content"], "answer": str(answer)})
    if len(systems) > 1:
        raise SystemExit("harness=pipeline_heldout: the held-out prompts have different system prompts; lm-eval "
                         "sends one for a task. Fix: evaluate this data without harness=.")
    return rows, systems.pop()


def _data_file(cfg: RunConfig, opts: dict, key: str, data_name: str) -> Path:
    given = opts.get(f"harness.{key}")
    if given is None and cfg.data.name == data_name:
        given = cfg.data.eval_path  # the run's own held-out file of that format
    if given is None or not Path(given).is_file():
        what = f"{given}: no such file" if given else "no file given"
        raise SystemExit(f"harness=pipeline_{key}: {what}. Fix: harness.{key}=FILE (a local copy; no data hub is "
                         "reached).")
    return Path(given)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _mcq_rows(path: Path) -> list[dict]:
    """Rows of our mcq format that a multiple-choice task can score: four options and a valid letter."""
    if path.suffix == ".jsonl":
        raw = _jsonl(path)
    else:
        with path.open(newline="", encoding="utf-8") as f:
            raw = list(csv.DictReader(f, delimiter="\t" if path.suffix == ".tsv" else ","))
    fields = ("question", *(f"option_{x}" for x in LETTERS))
    rows = [{**{k: str(r[k]) for k in fields}, "label": LETTERS.index(str(r["correct_answer"]).strip().upper())}
            for r in raw if all(str(r.get(k) or "").strip() for k in fields)
            and str(r.get("correct_answer") or "").strip().upper() in LETTERS]
    if len(rows) < len(raw):
        log.warning("%s: %d of %d rows skipped (an empty option or no A-D answer)", path, len(raw) - len(rows),
                    len(raw))
    if not rows:
        raise SystemExit(f"harness=pipeline_mcq: {path} has no usable rows (question, option_A..option_D, "
                         "correct_answer A-D). Fix: give a file in the mcq format.")
    return rows


# ---- where results land --------------------------------------------------------------------------------------

def _record(run_dir: Path, report: dict) -> None:
    from torch.utils.tensorboard import SummaryWriter

    dirs = RunDir(run_dir)
    if dirs.summary.is_file():
        # merged task by task: an earlier harness= run's other tasks stay in the summary
        summary = json.loads(dirs.summary.read_text())
        kept = summary.get("harness") or {}
        merged = {name: {**kept.get(name, {}), **tasks} for name, tasks in report["models"].items()}
        write_json_atomic(dirs.summary, {**summary, "harness": {**kept, **merged}})
    final_step = json.loads(dirs.summary.read_text()).get("steps", 0) if dirs.summary.is_file() else 0
    best_note = dirs.best / "best.json"
    best_step = json.loads(best_note.read_text()).get("step", final_step) if best_note.is_file() else final_step
    writer = SummaryWriter(log_dir=str(dirs.tb))
    try:
        for name, tasks in report["models"].items():
            step = {"base": 0, "best": best_step}.get(name, final_step)
            for task, metrics in tasks.items():
                for metric, value in metrics.items():
                    writer.add_scalar(f"harness/{task}/{metric}" + ("" if name in ("base", "tuned", "best")
                                                                    else f"/{name}"), value, step)
    finally:
        writer.close()


def format_harness_table(report: dict) -> str:
    names = list(report["models"])
    rows = sorted({(t, m) for tasks in report["models"].values() for t, ms in tasks.items() for m in ms})
    delta = len(names) == 2
    head = f"{'task':<24} {'metric':<28}" + "".join(f" {n:>10}" for n in names)
    lines = [head + (f" {'change':>9}" if delta else "")]
    for task, metric in rows:
        values = [report["models"][n].get(task, {}).get(metric) for n in names]
        cells = "".join(f" {v:>10.4f}" if v is not None else f" {'-':>10}" for v in values)
        change = f" {values[1] - values[0]:>+9.4f}" if delta and None not in values else ""
        lines.append(f"{task:<24} {metric:<28}{cells}{change}")
    return "\n".join(lines)
