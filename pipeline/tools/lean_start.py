"""What a tool's process keeps out: `python -m pipeline.tools.evaluate|chat|serve|export RUN ...` on runs trained
without bitsandbytes never imports it (peft imports it whenever it is installed; its CPU backend then prints
"Failed to load CPU gemm_4bit_forward from kernels-community" and the import costs ~3.5 s on 2 cores).

Called by each tool's `__main__` block before its main(), never by library code: a test process that imports a tool
must still be able to quantize afterwards. The same rule as pipeline/config/unused_libraries.py for run.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pipeline.config.run_dir import RunDir
from pipeline.config.saved_run import run_config
from pipeline.config.unused_libraries import hide, wants_bitsandbytes

# a run's own subfolders a tool also accepts (final/, best/, the exports): their run is the parent
_RUN_SUBDIRS = ("final", "best", "export", "export_best")


def keep_unused_libraries_out(argv: Sequence[str]) -> None:
    """bitsandbytes stays out when every run the command line names (its paths, compare=PATH) trained without it.
    A path that is not a run directory (an export elsewhere, a model folder) may hold a quantized model: kept."""
    paths = [Path(a) for a in argv if "=" not in a and not a.startswith("-")]
    paths += [Path(a.partition("=")[2]) for a in argv if a.startswith("compare=") and a not in ("compare=base",
                                                                                            "compare=model")]
    runs = [_run_of(p) for p in paths]
    if not runs or None in runs:
        return
    try:
        if not any(wants_bitsandbytes(run_config(run)) for run in runs):
            hide("bitsandbytes")
    except Exception:  # an unreadable config is the tool's own error to report, with the libraries all there
        return


def _run_of(path: Path) -> Path | None:
    for candidate in (path, path.parent) if path.name in _RUN_SUBDIRS else (path,):
        if RunDir(candidate).config.is_file():
            return candidate
    return None
