"""`btp train` end to end on a real local Ray: 2 workers, FSDP2, synthetic data; fine-tuning from our pretraining."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import yaml
from conftest import s3_server

from bridgetower import BridgeTowerForImageClassification, BridgeTowerForTextClassification, BridgeTowerForVQA
from btp.cli import main
from btp.data.synth import write_synthetic


@pytest.fixture(scope="module")
def s3_module():
    """A local S3 server for the module, started before its Ray, whose processes must see its address."""
    with s3_server() as uri:
        yield uri


@pytest.fixture(scope="module", autouse=True)
def shared_ray(s3_module):
    """One local Ray for the module's runs (`btp train` joins a running Ray): saves a start and a stop per run.

    The settings `btp train` gives a Ray it starts itself are set before this one starts, so its processes see
    them too.
    """
    from btp.train.run import quiet_ray_env, ray_session

    quiet_ray_env()
    with ray_session(log_to_driver=True):
        yield


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    # 600 examples per classification set: 60 validation pictures measure learning well enough
    write_synthetic(out, images=200, seed=5, classification=600)
    return out


def _args(synth, tmp_path, *extra):
    return [
        f"data.root={synth}",
        f"train.storage={tmp_path / 'runs'}",
        "train.batch_size=8",
        "train.log_every=2",
        "track.wandb=false",
        *extra,
    ]


DRILL = ["train.max_steps=6", "train.checkpoint_every=3", "train.eval_every=null", "train.num_workers=2"]


@pytest.fixture(scope="module")
def pretrained(synth, tmp_path_factory):
    """A 4-step pre-training (MLM + ITM over 2 workers), tracked in wandb offline."""
    tmp = tmp_path_factory.mktemp("pre")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("WANDB_MODE", raising=False)
        patch.delenv("WANDB_API_KEY", raising=False)
        tracked = _args(synth, tmp, "train.max_steps=4", "train.eval_every=2", "track.wandb=true")
        assert main(["train", "experiments/synth/pretrain.yaml", *tracked]) == 0
    return tmp / "runs" / "pretrain"


@pytest.fixture(scope="module")
def straight(synth, pretrained, tmp_path_factory):
    """An uninterrupted 6-step VQA fine-tuning from that pre-training (FSDP2 over 2 gloo ranks): the run that
    interrupted runs are compared with."""
    tmp = tmp_path_factory.mktemp("straight")
    args = _args(synth, tmp, *DRILL, f"model.init_from={pretrained}", "train.name=straight")
    assert main(["train", "experiments/synth/vqa.yaml", *args]) == 0
    return tmp / "runs" / "straight"


def test_pretrain_then_finetune_vqa_from_our_run(synth, pretrained, straight):
    """Pretraining (tracked in wandb offline), then VQA from its weights, answering and scoring the test split."""
    from btp.track import find_offline_runs, read_offline_run

    pre = pretrained
    rows = [json.loads(line) for line in (pre / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [2, 4]
    assert {"train/mlm", "train/itm", "lr", "samples_per_s", "mfu", "data_wait_share"} <= set(train_rows[0])
    assert (pre / "config.yaml").is_file() and (pre / "model" / "model.safetensors").is_file()

    # the wandb run (rank 0 only: one for two workers) holds exactly what the trainer reported
    (offline,) = find_offline_runs(pre)
    logged = read_offline_run(offline)
    reported: dict[int, dict] = {}
    for row in rows:
        reported.setdefault(row["step"], {}).update({k: v for k, v in row.items() if k != "step"})
    history = {r["_step"]: {k: v for k, v in r.items() if not k.startswith("_")} for r in logged["history"]}
    assert history == reported and sorted(history) == [2, 4]
    pre_summary = json.loads((pre / "summary.json").read_text())
    assert all(logged["summary"][k] == v for k, v in pre_summary.items())
    assert logged["group"] == "synth" and logged["project"] == "bridgetower"
    assert {"task:pretrain", "bridge:add", "synth"} <= set(logged["tags"])
    assert logged["config"]["train"]["max_steps"] == 4 and logged["config"]["model"]["bridge"] == "add"

    run = straight
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["init_from"] == str(pre)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 6 and 0.0 <= summary["val/vqa_score"] <= 1.0
    model = BridgeTowerForVQA.from_pretrained(run / "model")
    answers = json.loads((synth / "vqa_answers.json").read_text())
    assert model.vqa_classifier[3].out_features == len(answers)

    # the test split answered in the official server's format, and scored per synthetic question type
    predictions = json.loads((run / "vqa_test_predictions.json").read_text())
    expected = []
    for shard in sorted(synth.glob("vqav2_test_*.arrow")):
        with pa.memory_map(str(shard)) as f:
            expected += [
                q for row in pa.ipc.open_file(f).read_all().column("question_id").to_pylist() for q in row
            ]
    assert [p["question_id"] for p in predictions] == sorted(expected)  # every test question, once
    assert all(p["answer"] in answers for p in predictions)
    types = ("color", "shape", "count", "exist", "position")
    assert all(0.0 <= summary[f"test/vqa_score/{t}"] <= 1.0 for t in types)
    assert 0.0 <= summary["test/vqa_score"] <= 1.0


def test_missing_data_is_one_clear_message(tmp_path, capsys):
    code = main(
        [
            "train",
            "experiments/synth/vqa.yaml",
            f"data.root={tmp_path / 'nowhere' / 'synth'}",
            f"train.storage={tmp_path / 'runs'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "data.train: no shard matches" in err
    assert f"run `btp data synth {tmp_path / 'nowhere' / 'synth'}` to create it" in err  # its own folder
    # the folder holds shards, the pattern names none of them: the hint is the pattern, not the folder
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "vqav2_train_0.arrow").write_bytes(b"")
    args = ["data.root=" + str(tmp_path / "here"), "data.train=[vqav2_trian_*.arrow]"]
    assert main(["train", "experiments/synth/vqa.yaml", *args, f"train.storage={tmp_path / 'runs'}"]) == 2
    err = capsys.readouterr().err
    assert "holds 1 other shards (vqav2_train_0.arrow): check the pattern in data.train" in err


def test_an_abbreviated_option_is_refused_not_guessed(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "experiments/synth/vqa.yaml", "--resum"])  # not taken for --resume
    assert info.value.code == 2 and "unrecognized arguments: --resum" in capsys.readouterr().err


def test_a_bad_ray_log_level_is_one_clear_message(synth, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BTP_RAY_LOG_LEVEL", "loud")
    assert main(["train", "experiments/synth/vqa.yaml", *_args(synth, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "BTP_RAY_LOG_LEVEL='LOUD' is not a log level" in err and "WARNING" in err
    assert not (tmp_path / "runs").exists()  # stopped before the run wrote anything


def test_the_local_rays_console_drops_the_raylets_worker_count_warning_only(capsys):
    """The raylet warns on the driver's console each time a local Ray passes another multiple of its startup
    concurrency in worker processes (every actor of a run is one: on 2 CPUs a study prints it again and again);
    on the Ray this module started as `btp train` starts one, Ray's printer drops that line and no other."""
    from ray._private import worker as ray_worker

    noise = (
        "WARNING: 8 PYTHON worker processes have been started on node: 0123abcd with address: 127.0.0.1, "
        "which is 4x the maximum expected startup concurrency (2)."
    )
    ray_worker.print_to_stdstream({"lines": [noise], "pid": "raylet", "is_err": False}, ignore_prefix=False)
    other = "WARNING: the object store is full"
    ray_worker.print_to_stdstream({"lines": [noise, other], "pid": "raylet", "is_err": False}, False)
    # a worker's own line that happens to say the same words is the worker's: it stays
    worker_line = {"lines": [noise], "pid": 1234, "is_err": False, "ip": "", "task_name": "t"}
    ray_worker.print_to_stdstream(worker_line, False)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 2
    assert "(raylet)" in lines[0] and lines[0].endswith(other)
    assert "pid=1234" in lines[1] and lines[1].endswith(noise)


def test_config_errors_stop_before_ray(capsys):
    assert main(["train", "experiments/synth/vqa.yaml", "train.lrr=1"]) == 2
    assert "did you mean train.lr?" in capsys.readouterr().err


def _weights(run):
    from safetensors.torch import load_file

    return load_file(str(run / "model" / "model.safetensors"))


def _max_diff(a, b) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_a_stopped_run_resumes_exactly(synth, pretrained, straight, tmp_path, capsys):
    stopped = [
        "experiments/synth/vqa.yaml",
        *_args(synth, tmp_path, *DRILL, f"model.init_from={pretrained}"),
        "train.name=stopped",
        "train.fail_at_step=5",
    ]
    assert main(["train", *stopped]) == 1
    printed = capsys.readouterr()
    assert "continue with --resume" in printed.err
    assert main(["train", *stopped]) == 2  # the run exists: starting it again needs --resume
    assert main(["train", *stopped, "--resume"]) == 0
    out = capsys.readouterr().out
    assert "resumed at step 3" in out and "btp train stopped: done" in out and "val/vqa_score" in out
    # the run's progress, not Ray's INFO lines (BTP_RAY_LOG_LEVEL, default WARNING)
    out += printed.out
    assert "[stopped] step 2  train/loss" in out and "Reporting training result" not in out
    assert _max_diff(_weights(straight), _weights(tmp_path / "runs" / "stopped")) <= 1e-6


def test_resume_keeps_a_finished_run_and_names_settings_that_changed(synth, tmp_path, capsys):
    from btp.config import load_experiment, save_resolved
    from btp.train.run import absolute_paths, check_resumable

    args = ["experiments/synth/vqa.yaml", *_args(synth, tmp_path, "train.name=done")]
    out = tmp_path / "runs" / "done"
    save_resolved(absolute_paths(load_experiment(args[0], args[1:])), out / "config.yaml")
    (out / "summary.json").write_text("{}")  # what a finished run leaves when it kept no checkpoint_* folder
    assert main(["train", *args, "--resume"]) == 2  # its model is not trained over again
    err = capsys.readouterr().err
    assert "is a finished run that kept no checkpoint" in err and "choose another train.name" in err
    (out / "checkpoint_000000").mkdir()
    check_resumable(absolute_paths(load_experiment(args[0], [*args[1:], "train.lr=1e-4"])), out, None)
    assert "train.lr 0.0003 -> 0.0001" in capsys.readouterr().out


def test_a_lone_worker_resumes_exactly(synth, tmp_path, capsys):
    """One worker reads its data itself (no split stream) and saves without a process group: stopped at step 3
    and resumed from its step-2 checkpoint, it ends with the weights of an uninterrupted run."""
    lone = [
        "train.num_workers=1", "train.max_steps=4", "train.checkpoint_every=2", "train.eval_every=null",
        "data.val=[]", "data.test=[]",
    ]  # fmt: skip
    args = ["experiments/synth/vqa.yaml", *_args(synth, tmp_path, *lone)]
    assert main(["train", *args, "train.name=lone"]) == 0
    stopped = [*args, "train.name=lone_stopped", "train.fail_at_step=3"]
    assert main(["train", *stopped]) == 1
    assert main(["train", *stopped, "--resume"]) == 0
    assert "[lone_stopped] resumed at step 2" in capsys.readouterr().out
    runs = tmp_path / "runs"
    assert _max_diff(_weights(runs / "lone"), _weights(runs / "lone_stopped")) <= 1e-6


def test_a_killed_worker_is_replaced_and_the_run_ends_as_if_nothing_happened(
    synth, pretrained, straight, tmp_path, capsys
):
    drill = ["train.name=killed", "train.fail_at_step=5", "train.fail_kill=true", "train.max_failures=1"]
    args = _args(synth, tmp_path, *DRILL, f"model.init_from={pretrained}")
    assert main(["train", "experiments/synth/vqa.yaml", *args, *drill]) == 0
    out = capsys.readouterr().out
    assert "fault drill: SIGKILL of rank 0" in out and "resumed at step 3" in out
    assert _max_diff(_weights(straight), _weights(tmp_path / "runs" / "killed")) <= 1e-6


def test_retrieval_gathers_negatives_across_workers_and_reports_recall(synth, tmp_path):
    args = _args(synth, tmp_path, "train.max_steps=2", "train.eval_every=null")
    assert main(["train", "experiments/synth/irtr.yaml", *args]) == 0
    summary = json.loads((tmp_path / "runs" / "irtr" / "summary.json").read_text())
    keys = [f"val/{d}_r{k}" for d in ("ir", "tr") for k in (1, 5, 10)]
    assert all(0.0 <= summary[k] <= 1.0 for k in keys), summary
    assert summary["val/ir_r10"] >= summary["val/ir_r5"] >= summary["val/ir_r1"]


def _rows(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_image_classification_learns_the_synthetic_shapes(synth, tmp_path, capsys):
    """The vision tower alone, FSDP2 over 2 workers, its layers compiled: well above chance (1/12) on colour x
    shape in 60 steps.

    Compiled by dynamo and AOT autograd without inductor's kernels (a cold compile cache adds about a minute on
    2 cores): the kernels' outputs and gradients are test_model's test_compiled_layers_give_the_same_outputs...
    """
    args = _args(
        synth,
        tmp_path,
        "train.max_steps=60",
        "train.eval_every=30",
        "train.batch_size=16",
        "train.compile=true",
        "train.compile_backend=aot_eager",
    )
    assert main(["train", "experiments/synth/image_cls.yaml", *args]) == 0
    assert "[image_cls] torch.compile (aot_eager, mode default) of " in capsys.readouterr().out
    run = tmp_path / "runs" / "image_cls"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 60
    assert summary["val/accuracy"] >= 3 / 12 and summary["test/accuracy"] >= 3 / 12, summary
    rows = _rows(run)
    assert [r["step"] for r in rows if "val/accuracy" in r] == [30, 60]
    assert all(r["mfu"] > 0 for r in rows if "train/loss" in r)
    model = BridgeTowerForImageClassification.from_pretrained(run / "model")
    assert model.classifier.out_features == len(json.loads((synth / "shapes_labels.json").read_text()))


def test_text_classification_trains_from_its_experiment_into_s3(synth, tmp_path, s3_module, capsys):
    """The text tower alone, its run stored in S3 (a local S3 server): Ray's checkpoints and the run's files."""
    from btp.train.storage import RunStorage, staging_dir

    storage = f"{s3_module}/runs"
    args = [*_args(synth, tmp_path, "train.max_steps=4", "train.eval_every=2"), f"train.storage={storage}"]
    args += ["train.checkpoint_every=2", "train.name=text_cls_s3"]
    assert main(["train", "experiments/synth/text_cls.yaml", *args]) == 0
    store = RunStorage(storage, "text_cls_s3")
    summary = json.loads(store.read_text("summary.json"))
    assert (
        summary["steps"] == 4
        and 0.0 <= summary["val/accuracy"] <= 1.0
        and 0.0 <= summary["test/accuracy"] <= 1.0
    )
    rows = [json.loads(line) for line in store.read_text("metrics.jsonl").splitlines()]
    assert [r["step"] for r in rows if "val/accuracy" in r] == [2, 4]
    assert store.exists("config.yaml") and store.exists("model/model.safetensors")
    assert f"{storage}/text_cls_s3" in capsys.readouterr().out  # where it went, as the user named it
    # Ray Train wrote the step-2 checkpoint into the same S3 folder
    import pyarrow.fs as pafs

    listed = [i.path for i in store.fs.get_file_info(pafs.FileSelector(store.path, recursive=True))]
    assert any("/checkpoint_" in p and p.endswith("meta.json") for p in listed), listed
    down = tmp_path / "down"
    store.pull(down)
    model = BridgeTowerForTextClassification.from_pretrained(down / "model")
    assert model.classifier.out_proj.out_features == 2
    # the same name again is refused, naming the S3 folder
    assert main(["train", "experiments/synth/text_cls.yaml", *args]) == 2
    assert f"{storage}/text_cls_s3 holds an earlier run" in capsys.readouterr().err
    assert staging_dir(storage, "text_cls_s3").is_dir()


def test_classification_without_data_or_classes_is_one_clear_message(synth, tmp_path, capsys):
    runs = f"train.storage={tmp_path / 'runs'}"
    nowhere = f"data.root={tmp_path / 'nowhere' / 'synth'}"
    assert main(["train", "experiments/synth/image_cls.yaml", nowhere, runs]) == 2
    err = capsys.readouterr().err
    assert "data.train: no shard matches" in err and "btp data synth" in err
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in synth.glob("sentiment_*.arrow"):
        (bare / path.name).write_bytes(path.read_bytes())
    args = [f"data.root={bare}", runs, "train.name=no_labels"]
    assert main(["train", "experiments/synth/text_cls.yaml", *args]) == 2
    err = capsys.readouterr().err
    assert "needs its number of classes: no sentiment_labels.json beside the training shards" in err


def test_a_run_that_fails_in_a_worker_names_the_bad_row(synth, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    for path in synth.iterdir():  # the synthetic set with one unreadable picture in the first training shard
        if path.is_file():
            (data / path.name).write_bytes(path.read_bytes())
        else:
            (data / path.name).symlink_to(path)
    shard = data / "vqav2_train_0.arrow"
    table = pa.ipc.open_file(pa.BufferReader(shard.read_bytes())).read_all()  # not mapped: rewritten below
    images = table.column("image").to_pylist()
    images[1] = b"not a png"
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    with pa.ipc.new_file(str(shard), table.schema) as writer:
        writer.write_table(table)
    args = _args(data, tmp_path, "train.num_workers=1", "train.max_steps=2", "data.map_batch_size=4")
    assert main(["train", "experiments/synth/vqa.yaml", *args]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-2].startswith("btp train vqa: the run failed: "), lines[-2:]
    assert f"{shard} row 1: column image: cannot decode image" in lines[-2], lines[-2:]
    assert lines[-1].strip().startswith("it saved no checkpoint: fix the cause"), lines[-1]
    # skipping bad rows instead: the run ends, and its summary counts the row it never trained on
    assert (
        main(["train", "experiments/synth/vqa.yaml", *args, "train.name=skip", "data.on_bad_row=skip"]) == 0
    )
    assert json.loads((tmp_path / "runs" / "skip" / "summary.json").read_text())["skipped_rows"]["train"] == 1
    assert "skipped 1 bad row(s) of the train split; first: " in capsys.readouterr().out
