"""Hostfiles (`host slots=N` per line, DeepSpeed's format): parsed and checked against the hw profile."""

from __future__ import annotations

import re

from pipeline.config.derived import resolve
from pipeline.config.schema import RunConfig
from pipeline.config.user_errors import UserError

HOST_LINE = re.compile(r"^(?P<host>[^\s=]+)\s+slots=(?P<slots>\d+)$")


class HostfileError(UserError, ValueError):
    """A hostfile that is missing or has a line DeepSpeed would reject or misread."""


def parse_hostfile(path: str) -> list[tuple[str, int]]:
    """`host slots=N` lines -> [(host, N)]; comments and blank lines skipped; errors name file:line and the fix."""
    file = resolve(path)
    if not file.is_file():
        raise HostfileError(
            f"hw.hostfile={path}: no such file ({file}). Fix: create it with one 'host slots=N' line per "
            "node (see hostfiles/README.md), or set hw.hostfile=null for one machine."
        )
    hosts: list[tuple[str, int]] = []
    for n, raw in enumerate(file.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = HOST_LINE.match(line)
        if not match or int(match["slots"]) <= 0:
            raise HostfileError(
                f"{file}:{n}: '{raw.strip()}' is not '<host> slots=<N>' with N >= 1. "
                "Fix the line, e.g. '10.0.0.1 slots=8'."
            )
        if match["host"] in {h for h, _ in hosts}:
            raise HostfileError(f"{file}:{n}: host '{match['host']}' is listed twice. Fix: one line per machine.")
        hosts.append((match["host"], int(match["slots"])))
    if not hosts:
        raise HostfileError(f"{file}: no 'host slots=N' lines. Fix: add one line per node.")
    return hosts


def hostfile_problems(cfg: RunConfig) -> list[str]:
    """The hostfile must exist, parse, and describe exactly hw.num_nodes x hw.num_processes."""
    hw = cfg.hw
    if not hw.hostfile:
        return []
    try:
        hosts = parse_hostfile(hw.hostfile)
    except HostfileError as err:
        return [str(err)]
    slots = sorted({s for _, s in hosts})
    if len(hosts) != hw.num_nodes or slots != [hw.num_processes]:
        listed = ", ".join(f"{h} slots={s}" for h, s in hosts)
        return [
            f"hw.hostfile={hw.hostfile} lists {listed} but hw={hw.name} wants {hw.num_nodes} node(s) x "
            f"{hw.num_processes} processes: fix the file, or set hw.num_nodes={len(hosts)} "
            f"hw.num_processes={slots[0]}."
        ]
    return []
