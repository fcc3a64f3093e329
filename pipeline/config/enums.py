"""Closed sets of values a config key may take; Hydra refuses anything else at compose time."""

from __future__ import annotations

from enum import Enum


class ModelSource(str, Enum):
    pretrained = "pretrained"  # transformers checkpoint: hub id or local directory
    gguf = "gguf"  # dequantised once from a GGUF file into a safetensors cache
    random = "random"  # built from `arch` with random weights (tests, benchmarks)


class Device(str, Enum):
    cpu = "cpu"
    cuda = "cuda"


class GenerationEngine(str, Enum):
    transformers = "transformers"  # TRL's model.generate in the training process, any device
    vllm_colocate = "vllm_colocate"  # vLLM in the training process on the same GPU (extra `gpu`)


class Precision(str, Enum):
    # auto: bf16 where the device computes it natively (CUDA; a CPU with avx512_bf16/AMX), else fp32
    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


class Launcher(str, Enum):
    # How run.py re-launches itself when the hw profile wants more than one process (pipeline/launch/launcher.py).
    accelerate = "accelerate"
    deepspeed = "deepspeed"
    torchrun = "torchrun"


class ShardEngine(str, Enum):
    # What shards a multi-process run (the zero group): DeepSpeed's ZeRO stage (0 = DDP), or PyTorch's FSDP2
    # (fully_shard through accelerate's FSDP plugin: weights, gradients and optimizer states, like ZeRO-3).
    deepspeed = "deepspeed"
    fsdp2 = "fsdp2"


class PeftInit(str, Enum):
    # how LoRA's A and B start (peft's init_lora_weights); pissa and olora move the base weights' principal part
    # into the adapter (the base is changed): final/ is converted back to a plain LoRA on the original base
    default = "default"  # peft's default: A random (Kaiming), B zero -- the adapter starts as a no-op
    gaussian = "gaussian"  # A Gaussian scaled by the rank, B zero
    pissa = "pissa"  # A, B from the top-r singular vectors of each weight (faster convergence; full SVD at start)
    olora = "olora"  # A, B from a QR decomposition of each weight


class PeftMethod(str, Enum):
    lora = "lora"
    full = "full"


class QuantMethod(str, Enum):
    none = "none"
    int8 = "int8"
    nf4 = "nf4"


class DataFormat(str, Enum):
    auto = "auto"  # detected from the columns of the first row
    messages = "messages"  # SFT: [{role, content}, ...] ending with an assistant turn
    alpaca = "alpaca"  # SFT: instruction, input, output
    prompt_completion = "prompt_completion"  # SFT: prompt, completion
    preference = "preference"  # DPO: prompt, chosen, rejected
    prompt_answer = "prompt_answer"  # GRPO: prompt, answer (answer goes to the rewards)
    unpaired = "unpaired"  # KTO: prompt, completion, label (true = desirable)
    # --- seed formats (issue 4) ---
    sharegpt = "sharegpt"  # SFT/DPO: conversations [{from, value}] (or role/content), tools, chosen/rejected turns
    llamafactory_dpo = "llamafactory_dpo"  # DPO: instruction (+input), output: [chosen, rejected]
    gsm8k = "gsm8k"  # GRPO/SFT: question, answer "...reasoning... #### 42" (gold = the text after ####)
    s1k = "s1k"  # GRPO/SFT: question, solution (+ a thinking trajectory and attempt for SFT)
    mcq = "mcq"  # GRPO/SFT: question, option_A..option_D, correct_answer (A-D), reasoning
    scored_groups = "scored_groups"  # group_pref/DPO: prompt, responses[], scores[] (top score = chosen)


class OnRewardError(str, Enum):
    stop = "stop"  # end the run naming the reward term, the row and the error
    zero = "zero"  # score the row 0, count it (rewards/<term>/failures) and log it


class OnBadRow(str, Enum):
    error = "error"  # stop at the first bad row, naming file, line and field
    skip = "skip"  # drop bad rows, count them per reason and report the counts


class TrainOn(str, Enum):
    # Which assistant turns of a multi-turn chat carry loss; system, user and tool tokens never do.
    all_assistant = "all_assistant"  # every assistant reply (LLaMA-Factory's default too)
    last_assistant = "last_assistant"  # the final reply only; earlier ones are context


# ---- loss and sampling names of TRL's trainers (tests/config/test_trl_fields.py checks them against installed TRL)


class GRPOLoss(str, Enum):
    # how per-token losses are aggregated (GRPOConfig.loss_type); see conf/algo/ for the papers' settings
    grpo = "grpo"  # mean over each sequence's tokens, then over sequences (DeepSeekMath; length-biased)
    dr_grpo = "dr_grpo"  # sum over tokens / (sequences x max_completion_length) (Dr. GRPO)
    dapo = "dapo"  # sum over tokens / active tokens of the whole accumulated batch (DAPO)
    bnpo = "bnpo"  # sum over tokens / active tokens of the local micro-batch
    cispo = "cispo"  # clipped, detached importance weight x advantage x log-prob (MiniMax-M1)
    sapo = "sapo"  # soft, temperature-gated ratio instead of a hard clip
    luspo = "luspo"  # sequence-level loss scaled by length (needs importance_sampling_level=sequence)
    vespo = "vespo"  # Gamma-weighted sequence-level importance weights


class RewardScaling(str, Enum):
    group = "group"  # (r - group mean) / group std
    batch = "batch"  # (r - group mean) / batch std
    none = "none"  # r - group mean (Dr. GRPO: no std division, no difficulty bias)


class ZeroStdGroups(str, Enum):
    # groups whose completions all got one reward (zero advantage): pipeline/train/levers/zero_std_groups.py
    keep = "keep"  # in the batch, as TRL does (they cost compute and, with beta=0, move nothing)
    skip = "skip"  # out of the loss; the loss is the one over the other groups
    resample = "resample"  # fresh prompts generated until the batch is full of teaching groups (bounded tries)


class ImportanceSampling(str, Enum):
    token = "token"  # one ratio pi/pi_old per token (PPO, GRPO, DAPO)
    sequence = "sequence"  # one length-normalised ratio per completion (GSPO)


class DPOLoss(str, Enum):
    sigmoid = "sigmoid"  # original DPO
    hinge = "hinge"  # SLiC
    ipo = "ipo"
    exo_pair = "exo_pair"
    nca_pair = "nca_pair"
    robust = "robust"  # needs 0 <= label_smoothing < 0.5
    bco_pair = "bco_pair"
    sppo_hard = "sppo_hard"
    aot = "aot"
    aot_unpaired = "aot_unpaired"
    apo_zero = "apo_zero"
    apo_down = "apo_down"
    discopop = "discopop"
    sft = "sft"  # NLL on chosen (combine with sigmoid through stage.trl.loss_weights for RPO-like mixes)
    sigmoid_norm = "sigmoid_norm"  # length-normalised sigmoid


class KTOLoss(str, Enum):
    kto = "kto"
    apo_zero_unpaired = "apo_zero_unpaired"


class CPOLoss(str, Enum):
    # TRL's CPOConfig.loss_type; stage=simpo runs it with simpo
    sigmoid = "sigmoid"
    hinge = "hinge"
    ipo = "ipo"
    simpo = "simpo"
    alphapo = "alphapo"  # simpo with cpo_alpha=0


class ObjectiveMode(str, Enum):
    # sweep.mode: whether a sweep's objective is better lower (min) or higher (max)
    min = "min"
    max = "max"
