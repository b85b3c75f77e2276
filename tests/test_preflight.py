"""What `btp train` checks before it writes a run folder or starts Ray, and how a failed run names its cause."""

from __future__ import annotations

import pytest

from btp.cli import main
from btp.data.synth import write_synthetic
from btp.train.run import failure_message


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=60, seed=1)
    return out


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.bridge=nonexistent", "model: unknown bridge 'nonexistent'; known: add,"),
        ("model.config.vision.foo=1", "model: unknown vision config keys: foo"),
        ("model.config.hidden_size=abc", "model: hidden_size must be an int, got 'abc'"),
        ("model.num_layers=0", "model: num_layers must be at least 1, got 0"),
        ("data.image_size=50", "not a multiple of patch_size 8 (data.image_size sets vision.image_size)"),
        ("data.transform=foo", "data.transform: unknown transform 'foo'; known: clip, blip,"),
        ("data.eval_transform=bar", "data.eval_transform: unknown transform 'bar'"),
        ("data.tokenizer=/nonexistent/tok", "data.tokenizer: /nonexistent/tok not found"),
        ("model.init_from=/nonexistent/run", "model.init_from: /nonexistent/run not found"),
        ("train.num_workers=64", "train.num_workers: 64 workers x train.cpus_per_worker 0.5 = 32 CPUs, but"),
        # more GPUs per worker than any machine has, so the check fails with or without a GPU here
        (
            "train.use_gpu=true train.gpus_per_worker=64",
            "train.use_gpu: 2 workers x train.gpus_per_worker 64 = 128 GPUs",
        ),
    ],
)
def test_a_bad_setting_stops_the_run_before_it_writes_or_starts_ray(
    synth, tmp_path, capsys, monkeypatch, override, message
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)  # the resource checks are for a local Ray
    runs = tmp_path / "runs"
    code = main(
        [
            "train",
            "experiments/synth/vqa.yaml",
            f"data.root={synth}",
            f"train.storage={runs}",
            *override.split(),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert err.count("\n") == 1  # one line, no traceback
    assert not runs.exists()  # nothing written: the corrected command runs without --resume


def test_a_storage_that_is_a_file_is_named(synth, tmp_path, capsys):
    storage = tmp_path / "notes.txt"
    storage.write_text("keep me\n")
    code = main(["train", "experiments/synth/vqa.yaml", f"data.root={synth}", f"train.storage={storage}"])
    assert code == 2
    assert f"train.storage: {storage} is a file, not a folder" in capsys.readouterr().err
    assert storage.read_text() == "keep me\n"


def test_the_failure_under_rays_wrappers_is_the_one_shown():
    from ray.exceptions import RayTaskError
    from ray.train.v2.api.exceptions import ControllerError, WorkerGroupError

    from bridgetower.batches import BadRow

    bad = BadRow("shard_0.arrow row 3: column image: cannot decode image (set data.on_bad_row: skip)")
    task = RayTaskError("MapBatches(preprocess_blocks)", "Traceback (most recent call last): ...", bad)
    err = WorkerGroupError("worker 0 failed:\nTraceback ...\nTo change retry attempts, ...", {0: task})
    assert failure_message(err) == str(bad)
    try:
        try:
            raise KeyError("pixel_values")
        except KeyError as inner:
            raise RuntimeError("the step failed") from inner
    except RuntimeError as outer:
        assert failure_message(ControllerError(outer)) == "KeyError: 'pixel_values'"
    assert failure_message(ValueError("")) == "ValueError"
