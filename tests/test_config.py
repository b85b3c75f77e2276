"""Experiment files: schema, overrides, interpolation, errors that name the file and key, resolved round trip."""

from pathlib import Path

import pytest

from btp.config import (
    ConfigError,
    ExperimentConfig,
    load_experiment,
    parse_override,
    save_resolved,
    to_yaml,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
FILES = sorted(EXPERIMENTS.rglob("*.yaml"))

MINIMAL = """\
data:
  task: vqa
  train: [vqav2_train_*.arrow]
"""

TUNED = (
    MINIMAL
    + """\
tune:
  metric: val/vqa_score
  space:
    train.lr: {type: loguniform, low: 1e-5, high: 1e-3}
    model.bridge: {type: choice, values: [add, gated]}
  stages:
    - name: coarse
      overrides: [train.max_steps=50]
      num_samples: 2
"""
)


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error(path: Path, overrides: list[str] = ()) -> str:
    with pytest.raises(ConfigError) as info:
        load_experiment(path, overrides)
    return str(info.value)


def test_experiment_files_exist():
    names = {str(p.relative_to(EXPERIMENTS)) for p in FILES}
    synth = {
        f"synth/{t}.yaml" for t in ("pretrain", "vqa", "nlvr2", "snli_ve", "irtr", "image_cls", "text_cls")
    }
    base = {
        f"{t}_base.yaml"
        for t in ("pretrain", "vqa", "nlvr2", "snli_ve", "f30k_itm", "f30k_itc", "coco_itc")
        + ("cifar10", "cifar100", "glue", "glue_mnli")
    }
    assert synth | base <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_every_experiment_file_loads(path):
    cfg = load_experiment(path)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.train.name == path.stem
    assert cfg.data.train and "${" not in to_yaml(cfg)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(EXPERIMENTS)))
def test_model_section_builds_a_bridgetower_config(path):
    from bridgetower.config import BridgeTowerConfig

    model = load_experiment(path).model
    extra = {"num_layers": model.num_layers} if model.num_layers else {}
    BridgeTowerConfig.preset(model.preset, bridge=model.bridge, **extra, **model.config)


def test_synth_files_read_the_synth_data():
    for path in EXPERIMENTS.glob("synth/*.yaml"):
        cfg = load_experiment(path)
        assert cfg.data.root == "data/synth" and cfg.model.preset == "tiny"
        assert cfg.data.tokenizer == "data/synth/tokenizer"


def test_paper_recipe_effective_batches():
    expected = {"pretrain_base": 4096, "vqa_base": 512, "nlvr2_base": 64, "snli_ve_base": 64}
    expected |= {"f30k_itm_base": 2048, "f30k_itc_base": 512, "coco_itc_base": 256}
    expected |= {"cifar10_base": 512, "cifar100_base": 512, "glue_base": 32, "glue_mnli_base": 32}
    for name, batch in expected.items():
        t = load_experiment(EXPERIMENTS / f"{name}.yaml").train
        assert t.num_workers * t.batch_size * t.grad_accum == batch, name


def test_classification_recipes():
    """Reference §4: CIFAR at 224 px with the clip transform, GLUE with RoBERTa's optimiser settings."""
    for name in ("cifar10_base", "cifar100_base"):
        cfg = load_experiment(EXPERIMENTS / f"{name}.yaml")
        assert cfg.data.task == "image_classification" and cfg.model.config["vision"]["image_size"] == 224
        assert cfg.data.transform == cfg.data.eval_transform == "clip"
        assert (cfg.train.warmup, cfg.train.weight_decay, cfg.train.lr_mult_head) == (0.06, 0.01, 1)
    for name in ("glue_base", "glue_mnli_base"):
        cfg = load_experiment(EXPERIMENTS / f"{name}.yaml")
        assert cfg.data.task == "text_classification" and cfg.data.max_text_len == 512
        assert (cfg.train.epochs, cfg.train.warmup, cfg.train.weight_decay, cfg.train.eps) == (
            10,
            0.06,
            0.1,
            1e-6,
        )


def test_defaults_and_float_strings(tmp_path):
    # PyYAML reads 1e-4 as a string (YAML 1.1 wants a dot); it must still be a float
    cfg = load_experiment(write(tmp_path, MINIMAL + "train:\n  lr: 1e-4\n  eps: 1E-9\n"))
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.eps == pytest.approx(1e-9)
    assert cfg.train.betas == [0.9, 0.98] and cfg.tune is None
    assert cfg.model.preset == "tiny" and cfg.data.vqa_answers == "data/synth/vqa_answers.json"


def test_overrides_apply_with_types(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_experiment(
        path,
        [
            "train.lr=3e-4",
            "model.bridge=gated",
            "train.betas=[0.9,0.99]",
            "train.max_steps=7",
            "model.config={vision: {image_size: 64}}",
            "model.init_from=runs/pretrain",
            "track.tags=[a,b]",
        ],
    )
    assert cfg.train.lr == 0.0003 and isinstance(cfg.train.lr, float)
    assert cfg.model.bridge == "gated"
    assert cfg.train.betas == [0.9, 0.99]
    assert cfg.train.max_steps == 7
    assert cfg.model.config == {"vision": {"image_size": 64}}
    assert cfg.model.init_from == "runs/pretrain"
    assert cfg.track.tags == ["a", "b"]


def test_later_override_wins_and_dicts_merge(tmp_path):
    path = write(tmp_path, MINIMAL + "model:\n  config: {dropout: 0.0}\n")
    cfg = load_experiment(path, ["train.lr=1", "train.lr=2", "model.config.vision.image_size=32"])
    assert cfg.train.lr == 2.0
    assert cfg.model.config == {"dropout": 0.0, "vision": {"image_size": 32}}


def test_interpolation_follows_data_root(tmp_path):
    path = write(tmp_path, MINIMAL)
    cfg = load_experiment(path, ["data.root=/data/x"])
    assert cfg.data.tokenizer == "/data/x/tokenizer"
    assert cfg.data.vqa_answers == "/data/x/vqa_answers.json"
    cfg = load_experiment(write(tmp_path, MINIMAL + "  root: /mnt/d\n", "rooted.yaml"))
    assert cfg.data.tokenizer == "/mnt/d/tokenizer"


def test_run_name_defaults_to_file_name(tmp_path):
    assert load_experiment(write(tmp_path, MINIMAL, "my_run.yaml")).train.name == "my_run"
    assert load_experiment(write(tmp_path, MINIMAL), ["train.name=other"]).train.name == "other"


def test_tune_section_and_dotted_space_override(tmp_path):
    cfg = load_experiment(write(tmp_path, TUNED), ["tune.space.train.lr.low=2e-5", "tune.mode=min"])
    assert cfg.tune.space["train.lr"].low == pytest.approx(2e-5)
    assert cfg.tune.space["model.bridge"].values == ["add", "gated"]
    assert cfg.tune.mode == "min" and cfg.tune.sampler.type == "tpe" and cfg.tune.scheduler.type == "asha"
    assert cfg.tune.stages[0].name == "coarse" and cfg.tune.stages[0].top_k == 1
    assert parse_override("tune.space.train.lr.high=1") == (["tune", "space", "train.lr", "high"], 1)


def test_override_creates_tune_section(tmp_path):
    cfg = load_experiment(write(tmp_path, MINIMAL), ["tune.metric=val/loss", "tune.mode=min"])
    assert cfg.tune.metric == "val/loss" and cfg.tune.num_samples == 4


@pytest.mark.parametrize("keep", ["exp.yaml", "tuned.yaml"])
def test_save_resolved_round_trips(tmp_path, keep):
    src = write(tmp_path, TUNED if keep == "tuned.yaml" else MINIMAL, keep)
    cfg = load_experiment(
        src, ["data.root=/data/y", "train.lr=3e-4", "model.config={vision: {image_size: 64}}"]
    )
    saved = save_resolved(cfg, tmp_path / "run" / "config.yaml")
    text = saved.read_text()
    assert "${" not in text and "/data/y/tokenizer" in text
    assert load_experiment(saved) == cfg


@pytest.mark.parametrize(
    "text, overrides, expected",
    [
        (MINIMAL + "train:\n  lrr: 1\n", [], "train.lrr: unknown key; did you mean train.lr?"),
        (MINIMAL + "trian:\n  lr: 1\n", [], "trian: unknown key; did you mean train?"),
        (MINIMAL + "train:\n  batch_size: big\n", [], "train.batch_size: expected int, got 'big'"),
        (MINIMAL + "train:\n  batch_size: 2.5\n", [], "train.batch_size: expected int, got 2.5"),
        (MINIMAL + "train:\n  betas: [0.9, x]\n", [], "train.betas[1]: expected float, got 'x'"),
        (MINIMAL + "train:\n  betas: 0.9\n", [], "train.betas: expected a list of float, got 0.9"),
        (MINIMAL + "train: 5\n", [], "train: expected a mapping (TrainConfig), got 5"),
        (MINIMAL + "model:\n  bridge: yes\n", [], "model.bridge: expected str, got True"),
        ("data:\n  train: [a.arrow]\n", [], "data.task: missing value (required)"),
        ("data:\n  task: vqa\n", [], "data.train: missing value (required)"),
        ("", [], "data.task: missing value (required)"),
        (
            "data:\n  task: vqa2\n  train: [a]\n",
            [],
            "data.task: 'vqa2' is not one of pretrain, irtr, vqa, nlvr2, snli_ve, image_classification, "
            "text_classification; did you mean vqa?",
        ),
        (
            MINIMAL + "  on_bad_row: skipp\n",
            [],
            "data.on_bad_row: 'skipp' is not one of error, skip; did you mean skip?",
        ),
        (MINIMAL + "train:\n  precision: fp16\n", [], "train.precision: 'fp16' is not one of fp32, bf16"),
        (
            MINIMAL + "track:\n  mode: onlin\n",
            [],
            "track.mode: 'onlin' is not one of offline, online, disabled",
        ),
        (MINIMAL + "model:\n  preset: huge\n", [], "model.preset: 'huge' is not one of tiny, base, large"),
        (
            MINIMAL + "model:\n  init_towers: {}\n",
            [],
            "model.init_towers: names no tower; give vision, text or both",
        ),
        (MINIMAL + "train:\n  batch_size: 0\n", [], "train.batch_size: must be at least 1, got 0"),
        (MINIMAL, ["train.threads=-2"], "train.threads: must be at least 0, got -2"),
        (
            MINIMAL,
            ["data.mlm_probability=15"],
            "data.mlm_probability: must be between 0 and 1 (exclusive), got 15.0",
        ),
        (
            MINIMAL,
            ["train.compile_backend=aot_eagre"],
            "override 'train.compile_backend=aot_eagre': 'aot_eagre' is not one of inductor, aot_eager, eager, "
            "cudagraphs; did you mean aot_eager?",
        ),
        (
            MINIMAL,
            ["train.compile_backend=aot_eager", "train.compile_mode=max-autotune"],
            "train.compile_mode: 'max-autotune' is a mode of the inductor backend, not of 'aot_eager'",
        ),
        (
            MINIMAL + "  tokenizer: ${data.rot}/t\n",
            [],
            "data.tokenizer: Interpolation key 'data.rot' not found",
        ),
        (MINIMAL, ["train.lrr=1"], "override 'train.lrr=1': unknown key; did you mean train.lr?"),
        (MINIMAL, ["trainlr"], "override 'trainlr': malformed; expected key=value"),
        (MINIMAL, ["=3"], "override '=3': malformed"),
        (MINIMAL, ["train.batch_size=big"], "override 'train.batch_size=big': expected int, got 'big'"),
        (MINIMAL, ["data.task=vqa2"], "override 'data.task=vqa2': 'vqa2' is not one of"),
        (MINIMAL, ["train.betas=[0.9,x]"], "override 'train.betas=[0.9,x]': train.betas[1]: expected float"),
        (
            MINIMAL,
            ["model.preset.size=1"],
            "override 'model.preset.size=1': model.preset is str, not a section",
        ),
        (MINIMAL, ["tune.stages.0.name=a"], "override 'tune.stages.0.name=a': tune.stages: is a list"),
        (
            MINIMAL,
            ["tune.metric=x", "tune.mode=best"],
            "override 'tune.mode=best': 'best' is not one of max, min",
        ),
        (MINIMAL, ["tune.mode=max"], "tune.metric: missing value (required)"),
    ],
)
def test_errors_name_file_and_key(tmp_path, text, overrides, expected):
    path = write(tmp_path, text)
    message = error(path, overrides)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_missing_file():
    assert error(Path("experiments/nope.yaml")) == "experiments/nope.yaml: no such experiment file"


def test_directory_is_not_a_file(tmp_path):
    assert "not a file" in error(tmp_path)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("data:\n  task: vqa\n   train: [a]\n", "line 3: invalid YAML"),
        ("data:\n  task: [vqa\n", "invalid YAML"),
        ("data:\n  task: vqa\n  task: irtr\n", "line 3: invalid YAML: duplicate key 'task'"),
        ("- just\n- a list\n", "expected a mapping of sections"),
    ],
)
def test_bad_yaml_names_file_and_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    message = error(path)
    assert message.startswith(f"{path}: ") and expected in message


@pytest.mark.parametrize(
    "space, expected",
    [
        (
            "train.lrr: {type: loguniform, low: 1e-5, high: 1e-3}",
            "tune.space.train.lrr: unknown config key train.lrr; did you mean train.lr?",
        ),
        ("trian.lr: {type: uniform, low: 0, high: 1}", "tune.space.trian.lr: unknown config key trian.lr"),
        ("model.bridge: {type: choice, values: []}", "tune.space.model.bridge: choice needs a non-empty"),
        ("model.bridge: {type: choice}", "tune.space.model.bridge: choice needs a non-empty"),
        (
            "train.lr: {type: uniform, low: 1e-3, high: 1e-5}",
            "tune.space.train.lr: low (0.001) must be below high",
        ),
        (
            "train.lr: {type: uniform, low: 1e-3, high: 1e-3}",
            "tune.space.train.lr: low (0.001) must be below",
        ),
        (
            "train.lr: {type: loguniform, low: 0, high: 1e-3}",
            "tune.space.train.lr: a log scale needs low > 0",
        ),
        (
            "train.lr: {type: uniform, low: -1, high: 1, log: true}",
            "tune.space.train.lr: a log scale needs low > 0",
        ),
        ("train.lr: {type: uniform, low: 1e-5}", "tune.space.train.lr: uniform needs both low and high"),
        ("train.lr: {type: gaussian, low: 0, high: 1}", "tune.space.train.lr.type: 'gaussian' is not one of"),
        ("train.lr: {low: 0, high: 1}", "tune.space.train.lr.type: missing value (required)"),
        ("train: {type: choice, values: [1]}", "tune.space.train: 'train' is a section, not a value"),
        (
            "model.bridge: {type: uniform, low: 0, high: 1}",
            "uniform needs a numeric key, but model.bridge is str",
        ),
        ("train.batch_size: {type: uniform, low: 8, high: 64}", "train.batch_size is an int: use type int"),
        ("train.batch_size: {type: int, low: 8.5, high: 64}", "int needs whole-number low and high"),
        (
            "model.preset: {type: choice, values: [tiny, huge]}",
            "tune.space.model.preset.values[1]: 'huge' is not",
        ),
        ("train.batch_size: {type: choice, values: [8, big]}", "values[1]: expected int, got 'big'"),
        (
            "train.lr: {type: loguniform, lw: 1e-5, high: 1e-3}",
            "tune.space.train.lr.lw: unknown key; did you mean",
        ),
    ],
)
def test_tune_space_errors(tmp_path, space, expected):
    text = MINIMAL + f"tune:\n  metric: val/loss\n  space:\n    {space}\n"
    message = error(write(tmp_path, text))
    assert expected in message, message


def test_tune_space_accepts_model_config_keys(tmp_path):
    space = "model.config.vision.image_size: {type: choice, values: [32, 64]}"
    cfg = load_experiment(write(tmp_path, MINIMAL + f"tune:\n  metric: m\n  space:\n    {space}\n"))
    assert cfg.tune.space["model.config.vision.image_size"].values == [32, 64]


@pytest.mark.parametrize(
    "stage, expected",
    [
        (
            "{name: s, space: {train.lrx: {type: int, low: 1, high: 2}}}",
            "tune.stages[0].space.train.lrx: unknown",
        ),
        (
            "{name: s, overrides: [train.lrr=1]}",
            "tune.stages[0].overrides[0]: override 'train.lrr=1': unknown key",
        ),
        ("{name: s, overrides: [nonsense]}", "tune.stages[0].overrides[0]: override 'nonsense': malformed"),
        ("{name: s, mode: maximum}", "tune.stages[0].mode: 'maximum' is not one of max, min"),
        ("{space: {}}", "tune.stages[0].name: missing value (required)"),
        ("{name: s, top_k: 0}", "tune.stages[0]: num_samples and top_k must be at least 1"),
    ],
)
def test_tune_stage_errors(tmp_path, stage, expected):
    text = MINIMAL + f"tune:\n  metric: m\n  stages:\n    - {stage}\n"
    message = error(write(tmp_path, text))
    assert expected in message, message


def test_unknown_key_without_close_match_lists_the_section(tmp_path):
    message = error(write(tmp_path, MINIMAL + "train:\n  nonsense: 1\n"))
    assert "train.nonsense: unknown key; valid keys under train: name, storage," in message


def test_dates_stay_strings_and_yaml_bools_are_not_names(tmp_path):
    cfg = load_experiment(write(tmp_path, MINIMAL + "train:\n  name: 2024-05-01\n"))
    assert cfg.train.name == "2024-05-01"
    assert "(quote it to mean a string)" in error(write(tmp_path, MINIMAL), ["train.name=yes"])


def test_override_value_that_is_not_yaml_stays_a_string(tmp_path):
    cfg = load_experiment(write(tmp_path, MINIMAL), ["data.root=*weird", "data.train=['*.arrow']"])
    assert cfg.data.root == "*weird" and cfg.data.train == ["*.arrow"]


def test_an_earlier_run_is_never_mixed_with_a_new_one(tmp_path):
    from btp.config import check_earlier

    check_earlier(tmp_path, earlier=False, resume=False)
    check_earlier(tmp_path, earlier=True, resume=True)
    with pytest.raises(ConfigError, match="holds an earlier run; pass --resume to continue"):
        check_earlier(tmp_path, earlier=True, resume=False)
    with pytest.raises(ConfigError, match="holds no study to finish"):
        check_earlier(tmp_path, earlier=False, resume=True, what="study")
