"""Run one side of a benchmark (a script and its arguments) and record its peak GPU memory on exit.

    python bench/child.py PEAK_FILE SCRIPT [ARGS...]
    deepspeed --num_gpus 1 bench/child.py PEAK_FILE SCRIPT [ARGS...]

Both sides go through this wrapper, so they are measured the same way without either script knowing: on CUDA,
torch.cuda.max_memory_allocated() is written to PEAK_FILE (bytes); on CPU the harness reads the process's max RSS.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def main() -> None:
    # under the deepspeed launcher (gpu_check's ZeRO steps) --local_rank=N comes first: it belongs to the script
    launcher_args = [a for a in sys.argv[1:] if a.startswith("--local_rank")]
    peak_file, script, *args = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    sys.argv = [script, *launcher_args, *args]
    sys.path.insert(0, str(Path(script).resolve().parent))
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        import torch

        if torch.cuda.is_available() and torch.cuda.is_initialized():
            Path(peak_file).write_text(str(torch.cuda.max_memory_allocated()))


if __name__ == "__main__":
    main()
