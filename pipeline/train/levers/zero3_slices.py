"""ZeRO-3 loading without gathering: each rank reads its own slice of every weight from the safetensors files
straight into its partition.

transformers' ZeRO-3 load gathers every layer whole on all ranks so that rank 0 can copy the checkpoint in, then
partitions it again. On CPU ranks (gloo) the largest layer -- the embedding, 545 MB in fp32 for Qwen2.5-0.5B --
then costs about twice its size on top of the shard (gloo's all-gather buffers it), and rank 0 maps the whole
checkpoint into its memory. Here every rank computes where its flat partition of each weight lies in the file
(safetensors: a JSON header, then each tensor's bytes contiguous in row-major order) and reads exactly those
bytes with pread into the partition: no gather, no full-size tensor, no file pages mapped into the process. While
the model is built, zero.Init's broadcast and copy of each new (uninitialised) weight are skipped as well: the load
overwrites them, so a rank's pages become resident only as its own shards are read.

Used only when it is exact: a local safetensors checkpoint whose tensor names match the model's parameters (as
is, or without the base-model prefix) with the same shapes. Anything else (renamed or fused weights, other
formats) goes through transformers' own path, and the log says which path ran.
"""

from __future__ import annotations

import json
import logging
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Elements converted per read when the file's dtype differs from the partition's (bounds the temporary buffer).
_CHUNK = 1 << 24


@dataclass(frozen=True)
class Entry:
    """Where one tensor's bytes lie in a safetensors file."""

    path: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    offset: int  # of its first byte in the file

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n


def checkpoint_entries(location: str | Path) -> dict[str, Entry] | None:
    """Every tensor of a local safetensors checkpoint (one file or an index of shards); None when there is none."""
    root = Path(location)
    index = root / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    elif (root / "model.safetensors").is_file():
        files = ["model.safetensors"]
    else:
        return None
    entries: dict[str, Entry] = {}
    for name in files:
        path = root / name
        with open(path, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            if info["dtype"] not in _DTYPES:
                return None
            begin = info["data_offsets"][0]
            entries[key] = Entry(str(path), _DTYPES[info["dtype"]], tuple(info["shape"]), 8 + size + begin)
    return entries


def _pread_into(fd: int, out: torch.Tensor, offset: int) -> None:
    """Fill the contiguous CPU tensor `out` with the file's bytes from `offset`."""
    view = memoryview(out.view(torch.uint8).numpy()).cast("B")
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise OSError(f"unexpected end of file reading {len(view)} bytes at {offset}")
        done += got


def read_elements(entry: Entry, start: int, out: torch.Tensor) -> None:
    """Elements [start, start + out.numel()) of the flattened tensor `entry` into the 1-D tensor `out`."""
    fd = os.open(entry.path, os.O_RDONLY)
    try:
        offset = entry.offset + start * entry.dtype.itemsize
        if entry.dtype == out.dtype and out.device.type == "cpu" and out.is_contiguous():
            _pread_into(fd, out, offset)
            return
        for i in range(0, out.numel(), _CHUNK):
            n = min(_CHUNK, out.numel() - i)
            buffer = torch.empty(n, dtype=entry.dtype)
            _pread_into(fd, buffer, offset + i * entry.dtype.itemsize)
            out[i:i + n].copy_(buffer)
    finally:
        os.close(fd)


def checkpoint_key(name: str, model: torch.nn.Module, entries: dict[str, Entry]) -> str | None:
    """The checkpoint's name for the model's parameter/buffer `name`: as is, or without the base-model prefix (a
    base model's checkpoint loaded under a head); None when the checkpoint lacks it."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    for key in (name, name.removeprefix(prefix + ".") if prefix else name):
        if key in entries:
            return key
    return None


def _matches(model: torch.nn.Module, entries: dict[str, Entry]) -> tuple[dict[str, str], list[str]] | None:
    """(parameter/buffer name -> checkpoint key, names the checkpoint lacks), or None when a shape differs."""
    found, missing = {}, []
    saved = set(model.state_dict())  # what a checkpoint holds: no non-persistent buffers (rotary inv_freq)
    named = [(n, t) for n, t in (*model.named_parameters(), *model.named_buffers()) if n in saved]
    for name, tensor in named:
        key = checkpoint_key(name, model, entries)
        if key is None:
            missing.append(name)
            continue
        shape = tuple(getattr(tensor, "ds_shape", tensor.shape))
        if entries[key].shape != shape:
            log.info("ZeRO-3 sliced load off: %s is %s in the checkpoint, %s in the model", key, entries[key].shape,
                     shape)
            return None
        found[name] = key
    return found, missing


def load_partitions(model: torch.nn.Module, location: str | Path) -> tuple[list[str], set[str]] | None:
    """Each rank's partition of every parameter (whole buffers) read from the checkpoint at `location`;
    (error messages, missing keys) as transformers' ZeRO-3 loader returns them, or None when this path does not
    apply (the caller falls back)."""
    entries = checkpoint_entries(location)
    if entries is None:
        return None
    matched = _matches(model, entries)
    if matched is None:
        return None
    found, missing = matched
    params = dict(model.named_parameters())
    for name, key in found.items():
        entry = entries[key]
        if name in params:
            param = params[name]
            if not hasattr(param, "ds_tensor"):
                return None  # not partitioned by zero.Init: nothing here applies
            shard = param.ds_tensor
            rank = torch.distributed.get_rank(group=getattr(param, "ds_process_group", None))
            start = shard.ds_numel * rank
            count = max(0, min(shard.ds_numel, entry.numel - start))
            with torch.no_grad():
                if count < shard.numel():
                    shard.zero_()  # the last rank's padding past the tensor's end
                if count:
                    read_elements(entry, start, shard.view(-1)[:count])
            param._is_hf_initialized = True
        else:  # a persistent buffer: whole on every rank
            buffer = model.get_buffer(name)
            with torch.no_grad():
                whole = torch.empty(entry.numel, dtype=entry.dtype)
                read_elements(entry, 0, whole)
                buffer.copy_(whole.view(entry.shape))
            buffer._is_hf_initialized = True
    return [], set(missing)


@contextmanager
def sliced_zero3_loading(location: str | Path) -> Iterator[None]:
    """While active, transformers' ZeRO-3 loader reads partitions from `location` (load_partitions) instead of
    gathering each layer; it falls back to its own loader where that does not apply."""
    import transformers.modeling_utils as modeling_utils

    original = modeling_utils._load_state_dict_into_zero3_model

    def load(model, state_dict, load_config=None):
        result = load_partitions(model, location)
        if result is None:
            log.info("ZeRO-3 load of %s: transformers' gathering loader (the checkpoint does not map 1:1 onto the "
                     "model's partitions)", location)
            return original(model, state_dict, load_config)
        log.info("ZeRO-3 load of %s: each rank read its own partitions from the safetensors files", location)
        return result

    modeling_utils._load_state_dict_into_zero3_model = load
    try:
        with _shards_left_unwritten():
            yield
    finally:
        modeling_utils._load_state_dict_into_zero3_model = original


@contextmanager
def _shards_left_unwritten() -> Iterator[None]:
    """zero.Init broadcasts every freshly created (still uninitialised) weight from rank 0, then copies this rank's
    slice of it into a new shard, so that random inits agree across ranks. A from_pretrained overwrites all of them:
    loaded weights by the loader above (or transformers' own, which broadcasts rank 0's copy), missing ones by
    transformers' `_initialize_missing_keys` under GatheredParameters(modifier_rank=0). Both steps are then pure
    cost: the broadcast writes (on gloo also buffers) each whole layer on every rank, the 545 MB embedding included,
    and the copy makes each shard resident before the load writes it again -- a tied lm_head's shard is created
    after all others and dropped by the tie, so it raised the peak by its size. Here each shard is left as
    torch.empty pages (resident only once the load writes them) and DeepSpeed's partition finds it already made."""
    from deepspeed.runtime.zero.partition_parameters import Init, OffloadDeviceEnum, PartitionedParamStatus

    original = Init._zero_init_param

    def empty_shard(self, param):
        self._convert_to_deepspeed_param(param)
        plain = (not param.ds_persist and self.remote_device != OffloadDeviceEnum.nvme and not self.pin_memory
                 and not self.quantized_nontrainable_weights and self.zero_param_process_group is None)
        if plain:  # the fields DeepSpeed's _partition_param sets when it creates a shard (0.19)
            aligned = self._aligned_size(param)
            shard = torch.empty(aligned // self._partition_world_size(param), dtype=param.dtype,
                                device=self.remote_device)
            shard.requires_grad = False
            shard.ds_numel = shard.numel()
            shard.status = PartitionedParamStatus.AVAILABLE
            shard.final_location = None
            param.ds_tensor = shard
            param.ds_numel_aligned = aligned
        param.partition()  # with the shard made: frees the whole tensor, copies nothing

    Init._zero_init_param = empty_shard
    try:
        yield
    finally:
        Init._zero_init_param = original
