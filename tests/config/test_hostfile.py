"""Hostfiles: the shipped ones parse, a bad line names file and line, a missing one or one that disagrees with the
profile is refused before anything loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config.checks import to_run_config
from pipeline.config.hostfile import HostfileError, hostfile_problems, parse_hostfile
from pipeline.config.plan import RunPlan, plan_run
from tests.helpers.runs import compose_config


def typed(overrides: list[str]) -> RunPlan:
    return plan_run(compose_config(overrides), Path("/tmp/run"))


def test_shipped_hostfiles_parse() -> None:
    assert parse_hostfile("hostfiles/localhost") == [("localhost", 2)]
    assert parse_hostfile("hostfiles/two_nodes") == [("10.0.0.1", 8), ("10.0.0.2", 8)]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("node1 slots=8\nnode2 slots=eight\n", ":2: 'node2 slots=eight' is not '<host> slots=<N>'"),
        ("node1 slots=0\n", ":1: 'node1 slots=0' is not '<host> slots=<N>' with N >= 1"),
        ("node1 gpus=8\n", ":1: 'node1 gpus=8'"),
        ("node1 slots=8\n# spare\nnode1 slots=8\n", ":3: host 'node1' is listed twice"),
        ("# nothing yet\n\n", "no 'host slots=N' lines"),
    ],
)
def test_bad_hostfile_lines_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    file = tmp_path / "hosts"
    file.write_text(text)
    with pytest.raises(HostfileError) as err:
        parse_hostfile(str(file))
    assert message in str(err.value) and str(file) in str(err.value)


def test_missing_hostfile_is_refused_before_anything_loads(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"hw.hostfile=.*nope: no such file .* one 'host slots=N' line per node"):
        typed(["hw=2x8xh100", f"hw.hostfile={tmp_path}/nope"])


def test_hostfile_must_match_the_profile(tmp_path: Path) -> None:
    file = tmp_path / "hosts"
    file.write_text("a slots=8\nb slots=8\nc slots=8\n")
    cfg = compose_config(["hw=2x8xh100", f"hw.hostfile={file}"])
    with pytest.raises(ValueError, match="wants 2 node.* x 8 processes.*hw.num_nodes=3 hw.num_processes=8"):
        to_run_config(cfg)
    file.write_text("a slots=8\nb slots=8\n")
    assert hostfile_problems(typed(["hw=2x8xh100", f"hw.hostfile={file}"]).cfg) == []
