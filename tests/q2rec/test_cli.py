"""The ``q2rec`` command: every stage listed and declared, global options in either place, typed --set."""

from __future__ import annotations

import subprocess
import sys

import pytest

from q2rec.cli import STAGES, main


def test_help_lists_every_stage_with_one_line(capsys):
    assert main([]) == 0
    printed = capsys.readouterr().out
    for name, stage in STAGES.items():
        assert f"    {name} " in printed and stage.help.split()[0] in printed


@pytest.mark.parametrize("stage", [s for s in STAGES if s not in ("bench", "cluster-demo")])
def test_every_stage_declares_its_options_beside_the_global_ones(stage, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([stage, "--help"])
    assert exit_.value.code == 0
    printed = capsys.readouterr().out
    assert f"usage: q2rec {stage}" in printed and "--artifacts DIR" in printed and "--dataset" in printed


def test_global_options_go_before_or_after_the_stage(tmp_path, capsys):
    for argv in (["--artifacts", str(tmp_path), "--dataset", "nope", "prepare"],
                 ["prepare", "--dataset", "nope", "--artifacts", str(tmp_path)]):  # fmt: skip
        assert main(argv) == 2
        assert "--dataset 'nope': not a folder" in capsys.readouterr().err


def test_set_is_checked_against_the_config_field_types(tmp_path, capsys):
    base = ["train", "--models", "sasrec", "--artifacts", str(tmp_path)]
    assert main([*base, "--set", "sasrec.epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "sasrec has no field 'epoch'; fields: " in err and "epochs" in err
    assert main([*base, "--set", "sasrec.epochs=ten"]) == 2
    assert "sasrec.epochs takes int; got 'ten'" in capsys.readouterr().err
    assert main([*base, "--set", "lightgcn.layers=2"]) == 2
    assert "no CF model 'lightgcn'; models: als, ease, pop, sasrec" in capsys.readouterr().err


def test_bench_names_the_benchmarks_there_are(capsys):
    assert main(["bench", "nope"]) == 2
    assert "no benchmark 'nope'; benchmarks: " in capsys.readouterr().err


def test_the_console_script_answers_help():
    done = subprocess.run(
        [sys.executable, "-m", "q2rec", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "cluster-demo" in done.stdout
