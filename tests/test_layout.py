"""The project layout keeps its promises: stdlib `platform` not shadowed, CLI help, no Ray in the model library."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_import_platform_from_repo_root_is_the_standard_library():
    path = _python("import platform; print(platform.__file__); platform.python_version()")
    assert Path(path).parent == Path(sysconfig.get_paths()["stdlib"])
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_bridgetower_does_not_import_the_platform_stack():
    loaded = _python(
        "import sys, bridgetower; print(' '.join(m for m in ('ray','omegaconf','wandb','optuna','btp') if m in sys.modules))"
    )
    assert loaded == ""


def test_btp_help_lists_subcommands():
    done = subprocess.run(["btp", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "bench" in done.stdout and "data" in done.stdout
    for command, flag in (
        (["data", "synth"], "--images"),
        (["data", "convert"], "--raw"),
        (["data", "validate"], "--task"),
        (["bench", "ingest"], "--rows"),
    ):
        sub = subprocess.run(
            ["btp", *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert sub.returncode == 0 and flag in sub.stdout, command
    bench = subprocess.run(
        ["btp", "bench", "model", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert bench.returncode == 0 and "--preset" in bench.stdout and "--json" in bench.stdout


def test_btp_without_command_is_a_usage_error():
    done = subprocess.run(["btp"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "usage: btp" in done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["bench", "model", "--batch", "0"],
            "btp bench model: error: argument --batch: must be at least 1, got 0",
        ),
        (["bench", "model", "--repeats", "two"], "argument --repeats: expected an integer, got 'two'"),
        (
            ["bench", "ingest", "--rows", "0"],
            "btp bench ingest: error: argument --rows: must be at least 1, got 0",
        ),
        (["bench", "ingest", "--stream-gb", "-1"], "argument --stream-gb: must be at least 0.001, got -1"),
        (["bench", "tune", "--lrs", "2e-4,abc"], "argument --lrs: 'abc' is not a positive number"),
        (["bench", "tune", "--images", "5"], "argument --images: must be at least 40, got 5"),
        (
            ["quickstart", "--images", "-5"],
            "btp quickstart: error: argument --images: must be at least 40, got -5",
        ),
    ],
)
def test_a_bad_number_is_a_usage_error_naming_the_option(args, message, capsys):
    from btp.cli import main

    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("bench", ["model", "ingest", "train", "tune"])
def test_a_json_path_that_cannot_be_written_is_refused_before_the_bench_runs(bench, tmp_path, capsys):
    from btp.cli import main

    for path, message in (
        (tmp_path / "missing" / "bench.json", f"the folder {tmp_path / 'missing'} does not exist"),
        (tmp_path, f"{tmp_path} is a folder; give a file path"),
    ):
        with pytest.raises(SystemExit) as done:
            main(["bench", bench, "--json", str(path)])
        assert done.value.code == 2
        err = capsys.readouterr().err
        assert f"btp bench {bench}: error: argument --json: {message}" in err and "Traceback" not in err
