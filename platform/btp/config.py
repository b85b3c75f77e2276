"""Experiment files: an OmegaConf structured schema, a loader with Hydra-style overrides, and clear errors.

An experiment is one YAML file with the sections `model`, `data`, `train`, `tune` (optional) and `track`:

    cfg = load_experiment("experiments/synth/vqa.yaml", ["train.lr=3e-4", "model.bridge=gated"])
    save_resolved(cfg, "runs/vqa/config.yaml")

`load_experiment` returns an `ExperimentConfig` dataclass with every interpolation resolved. Every problem in a
file or an override is one `ConfigError` whose message names the file and the dotted key.
"""

# No `from __future__ import annotations`: OmegaConf reads the dataclass annotations as real types.

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, BooleanNode, DictConfig, FloatNode, IntegerNode, OmegaConf, StringNode
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """An experiment file or override that does not fit the schema; the message names the file and the key."""


def check_earlier(folder: Path, earlier: bool, resume: bool, what: str = "run") -> None:
    """Refuse to mix a new run (or study) into `folder` when it holds an earlier one, and --resume without one."""
    verb = "continue" if what == "run" else "finish"
    if earlier and not resume:
        raise ConfigError(
            f"train.name: {folder} holds an earlier {what}; pass --resume to {verb} it, "
            "or choose another train.name (or delete that folder)"
        )
    if resume and not earlier:
        raise ConfigError(f"--resume: {folder} holds no {what} to {verb}")


def _choice(default: Any, *options: str) -> Any:
    """A string field restricted to `options` (checked by the loader, not by OmegaConf)."""
    return field(default=default, metadata={"choices": options})


TASKS = (
    "pretrain",
    "irtr",
    "vqa",
    "nlvr2",
    "snli_ve",
    "image_classification",
    "text_classification",
)


@dataclass
class TowersConfig:
    """Uni-modal towers to start from when there is no BridgeTower checkpoint (hub ids or local dirs).

    vision: a transformers CLIPVisionModel, or a run/checkpoint of ours or a BridgeTower whose vision tower is
    taken (e.g. an image-classification run); text: a RobertaModel, or likewise. A tower left out starts fresh.
    """

    vision: str | None = None
    text: str | None = None


@dataclass
class ModelConfig:
    """Which BridgeTower to build and what to initialise it from."""

    preset: str = _choice("tiny", "tiny", "base", "large")
    # free-form: bridgetower's own registry (register_bridge) decides which names exist
    bridge: str = "add"
    num_layers: int | None = None
    # overrides of BridgeTowerConfig fields, e.g. {"vision": {"image_size": 64}}; the model validates them
    config: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    init_towers: TowersConfig | None = None
    gradient_checkpointing: bool = False


@dataclass
class DataConfig:
    """Where the shards are and how examples become batches; shard patterns are relative to `root`."""

    root: str = "data/synth"
    task: str = _choice(MISSING, *TASKS)
    train: list[str] = MISSING
    val: list[str] = field(default_factory=list)
    test: list[str] = field(default_factory=list)
    tokenizer: str = "${data.root}/tokenizer"
    image_size: int | None = None
    max_text_len: int = 40
    # pretraining: share of the caption tokens MLM predicts (BERT's and the paper's 15 %; of those, 80 % become
    # <mask>, 10 % a random token, 10 % stay)
    mlm_probability: float = 0.15
    transform: str = "clip"
    eval_transform: str = "blip"
    on_bad_row: str = _choice("error", "error", "skip")
    map_batch_size: int = 64
    # Ray's logical CPUs per read/preprocess task (below 1: they fit beside fractional train workers)
    cpus_per_task: float = 0.25
    # most read / preprocessing tasks at once; 0: as many as their CPUs allow
    concurrency: int = 0
    shuffle_buffer: int = 256
    vqa_answers: str | None = "${data.root}/vqa_answers.json"
    # image/text classification: a JSON list of class names (its length is num_labels); null: the
    # {dataset}_labels.json beside the training shards (cifar10_labels.json, glue_sst2_labels.json, ...)
    labels: str | None = None


@dataclass
class TrainConfig:
    """Workers, optimiser and schedule (the official BridgeTower recipe's knobs), checkpoints."""

    name: str | None = None
    storage: str = "runs"
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    gpus_per_worker: float = 1.0
    # torch threads of each training worker; 0: Ray's default, one per CPU the worker reserves (at least 1).
    # A lone worker reserving 0.5 CPU of 2 cores leaves one idle: threads: 2 uses it
    threads: int = 0
    batch_size: int = 32
    grad_accum: int = 1
    max_steps: int | None = None
    epochs: int = 1
    lr: float = 1e-4
    weight_decay: float = 0.01
    # below 1: a ratio of the total steps; 1 or more: a number of steps (as the official code)
    warmup: float = 0.1
    end_lr: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    lr_mult_head: float = 5.0
    lr_mult_cross_modal: float = 5.0
    precision: str = _choice("fp32", "fp32", "bf16")
    fsdp: bool = True
    # torch.compile each layer (vision blocks, text and cross-modal layers) once before the first step:
    # faster steps (fused LayerNorm/GELU/residuals) for a one-off compile of a few seconds to minutes
    compile: bool = False
    # torch.compile's mode and backend for train.compile: a mode applies to inductor only; aot_eager traces the
    # layers and their backward without generating kernels (a quick check that a model compiles)
    compile_mode: str = _choice(
        "default", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"
    )
    compile_backend: str = _choice("inductor", "inductor", "aot_eager", "eager", "cudagraphs")
    seed: int = 0
    log_every: int = 10
    eval_every: int | None = None
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_failures: int = 0
    # fault-tolerance drills: at this step rank 0 fails once (a restarted or resumed run does not), by raising
    # an error or, with fail_kill, by SIGKILL of its own process (a lost worker)
    fail_at_step: int | None = None
    fail_kill: bool = False


@dataclass
class ParamSpace:
    """One searched config key: a numeric range or a list of choices."""

    type: str = _choice(MISSING, "loguniform", "uniform", "int", "choice")
    low: float | None = None
    high: float | None = None
    values: list[Any] | None = None
    log: bool = False


@dataclass
class SamplerConfig:
    """Optuna sampler."""

    # grid: every combination of the `choice` values (every searched key must be a choice)
    type: str = _choice("tpe", "tpe", "random", "grid")
    seed: int = 0
    # TPE: trials sampled at random before TPE models the results (Optuna's default, 10, when unset); the
    # study's first trials, which cover every choice value, count among them
    n_startup_trials: int | None = None


@dataclass
class SchedulerConfig:
    """Trial scheduler: ASHA stops weak trials early; `none` runs every trial to the end."""

    type: str = _choice("asha", "asha", "none")
    # steps before ASHA's first cut (default: train.eval_every, the first evaluation a trial reports)
    grace_period: int | None = None
    reduction_factor: int = 2
    max_t: int | None = None


@dataclass
class StageConfig:
    """One stage of a multi-stage study; its best `top_k` settings seed the next stage."""

    name: str = MISSING
    experiment: str | None = None
    overrides: list[str] = field(default_factory=list)
    space: dict[str, ParamSpace] = field(default_factory=dict)
    num_samples: int = 4
    top_k: int = 1
    # None: the study's own metric and mode
    metric: str | None = None
    mode: str | None = _choice(None, "max", "min")
    # None: the study's tune.max_concurrent (e.g. pre-training trials in pairs, fine-tuning one at a time)
    max_concurrent: int | None = None


@dataclass
class TuneConfig:
    """A hyperparameter study over config keys (`space` maps dotted keys such as `train.lr` to ranges)."""

    metric: str = MISSING
    mode: str = _choice("max", "max", "min")
    space: dict[str, ParamSpace] = field(default_factory=dict)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    num_samples: int = 4
    max_concurrent: int = 1
    # None: SQLite in the study directory
    storage: str | None = None
    stages: list[StageConfig] = field(default_factory=list)


@dataclass
class TrackConfig:
    """Weights & Biases tracking."""

    wandb: bool = True
    project: str = "bridgetower"
    entity: str | None = None
    mode: str = _choice("offline", "offline", "online", "disabled")
    group: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class ExperimentConfig:
    """A whole experiment file."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig | None = None
    track: TrackConfig = field(default_factory=TrackConfig)


# --- YAML ------------------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-4` as a float, keeps dates as strings and refuses duplicate keys."""

    # OmegaConf cannot hold datetime values; a run name such as 2024-05-01 is meant as text anyway
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value != "<<":
                if key_node.value in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key_node.value!r}", key_node.start_mark
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


# YAML 1.1 wants a dot in a float, so `1e-4` would otherwise stay a string
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.[\d_]*)?|\.\d[\d_]*)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict:
    """The file's top-level mapping; ConfigError naming the file (and line) otherwise."""
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    if not path.is_file():
        raise ConfigError(f"{path}: not a file")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}: " if mark else ""
        raise ConfigError(f"{path}: {where}invalid YAML: {err.problem or err.context}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (model, data, train, tune, track)")
    return data


# --- schema walking ----------------------------------------------------------------------------------------


class _Problem(Exception):
    """A problem at one dotted key; turned into a ConfigError once the file or override is known."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key, self.detail = key, detail


def _join(prefix: str, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


def _unwrap(hint: Any) -> tuple[Any, bool]:
    """(type, optional) with `X | None` removed."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        rest = [a for a in args if a is not type(None)]
        return rest[0], len(rest) < len(args)
    return hint, False


def _fields(cls: type) -> dict[str, tuple[Any, tuple[str, ...]]]:
    """Field name -> (type hint, allowed values) of a schema dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f.metadata.get("choices", ())) for f in dataclasses.fields(cls)}


def _describe(hint: Any) -> str:
    base, optional = _unwrap(hint)
    origin = typing.get_origin(base)
    if dataclasses.is_dataclass(base) or origin is dict:
        name = "a mapping"
    elif origin is list:
        item = _describe(typing.get_args(base)[0])
        name = "a list of mappings" if item == "a mapping" else f"a list of {item}"
    elif base is Any:
        name = "any value"
    else:
        name = base.__name__
    return f"{name} or null" if optional else name


def _suggest(word: str, options: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    if close:
        return f"did you mean {_join(prefix, close[0])}?"
    return f"valid keys{' under ' + prefix if prefix else ''}: " + ", ".join(options)


def _show(value: Any) -> str:
    return "null" if value is None else repr(value)


def _is_interpolation(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


_NODES = {int: IntegerNode, float: FloatNode, bool: BooleanNode, str: StringNode}


def _check(value: Any, hint: Any, key: str, choices: tuple[str, ...] = ()) -> None:
    """Raise _Problem for the first part of a raw YAML value that does not fit the type hint."""
    base, optional = _unwrap(hint)
    if base is Any or _is_interpolation(value) or (value is None and optional):
        return
    origin = typing.get_origin(base)
    if dataclasses.is_dataclass(base):
        _check_section(value, base, key)
    elif origin is dict:
        if not isinstance(value, dict):
            raise _Problem(key, f"expected {_describe(hint)}, got {_show(value)}")
        for k, v in value.items():
            _check(v, typing.get_args(base)[1], _join(key, k))
    elif origin is list:
        if not isinstance(value, list):
            raise _Problem(key, f"expected {_describe(hint)}, got {_show(value)}")
        for i, v in enumerate(value):
            _check(v, typing.get_args(base)[0], f"{key}[{i}]")
    else:
        _check_scalar(value, base, hint, key, choices)


def _check_section(value: Any, cls: type, key: str) -> None:
    if not isinstance(value, dict):
        raise _Problem(key or "(top level)", f"expected a mapping ({cls.__name__}), got {_show(value)}")
    fields = _fields(cls)
    for k, v in value.items():
        if k not in fields:
            raise _Problem(_join(key, k), "unknown key; " + _suggest(str(k), fields, key))
        hint, choices = fields[k]
        _check(v, hint, _join(key, k), choices)


def _check_scalar(value: Any, base: type, hint: Any, key: str, choices: tuple[str, ...]) -> None:
    # a YAML `yes`/`on` in a string field is almost always a mistake, so do not let it become "True"
    bad = value is None or isinstance(value, (dict, list)) or (base is str and isinstance(value, bool))
    if not bad:
        try:
            value = _NODES[base](value)._value()
        except OmegaConfBaseException:
            bad = True
    if bad:
        quote = " (quote it to mean a string)" if base is str and isinstance(value, bool) else ""
        raise _Problem(key, f"expected {_describe(hint)}, got {_show(value)}{quote}")
    if choices and value != MISSING and value not in choices:
        close = difflib.get_close_matches(str(value), choices, n=1)
        guess = f"; did you mean {close[0]}?" if close else ""
        raise _Problem(key, f"{value!r} is not one of {', '.join(choices)}{guess}")


_Located = tuple[list[str], Any, tuple[str, ...]]


def _locate(parts: list[str], hint: Any, prefix: str = "", choices: tuple[str, ...] = ()) -> _Located:
    """Split a dotted key into config keys (tune.space keys contain dots): (keys, type hint, allowed values)."""
    if not parts:
        return [], hint, choices
    base, _ = _unwrap(hint)
    head, rest = parts[0], parts[1:]
    if base is Any:
        return list(parts), Any, ()
    if dataclasses.is_dataclass(base):
        fields = _fields(base)
        if head not in fields:
            raise _Problem(_join(prefix, head), "unknown key; " + _suggest(head, fields, prefix))
        hint, choices = fields[head]
        keys, sub, sub_choices = _locate(rest, hint, _join(prefix, head), choices)
        return [head, *keys], sub, sub_choices
    if typing.get_origin(base) is dict:
        return _locate_in_dict(parts, typing.get_args(base)[1], prefix)
    if typing.get_origin(base) is list:
        raise _Problem(prefix, "is a list: set it whole, e.g. key=[a,b]")
    raise _Problem(_join(prefix, head), f"{prefix} is {_describe(hint)}, not a section")


def _locate_in_dict(parts: list[str], value_hint: Any, prefix: str) -> _Located:
    # the shortest dotted entry name after which the rest of the key fits the entry's type
    for end in range(1, len(parts) + 1):
        name = ".".join(parts[:end])
        try:
            keys, sub, choices = _locate(parts[end:], value_hint, _join(prefix, name))
        except _Problem:
            if end == len(parts):
                raise
            continue
        return [name, *keys], sub, choices
    raise AssertionError("unreachable")


# --- loading -----------------------------------------------------------------------------------------------


def _merge(cfg: DictConfig, raw: dict) -> DictConfig:
    """Check a raw layer against the schema, then merge it into cfg."""
    _check_section(raw, ExperimentConfig, "")
    try:
        return OmegaConf.merge(cfg, raw)
    except OmegaConfBaseException as err:
        raise _from_omegaconf(err) from None


def _from_omegaconf(err: OmegaConfBaseException) -> _Problem:
    detail = str(getattr(err, "msg", None) or err).splitlines()[0]
    return _Problem(str(getattr(err, "full_key", None) or "(config)"), detail)


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (config keys, value parsed as YAML); raises ConfigError for a malformed or unknown key."""
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.]*", key.strip()):
        raise ConfigError(f"override {text!r}: malformed; expected key=value, e.g. train.lr=3e-4")
    try:
        keys, _, _ = _locate(key.strip().split("."), ExperimentConfig)
    except _Problem as p:
        raise ConfigError(f"override {text!r}: {_detail(p, key.strip())}") from None
    return keys, _parse_value(value)


def _parse_value(text: str) -> Any:
    if not text.strip():
        return ""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        # e.g. a glob such as *.arrow, which YAML reads as an alias: keep it as written
        return text


def _detail(problem: _Problem, key: str) -> str:
    return problem.detail if problem.key == key else f"{problem.key}: {problem.detail}"


def _nest(keys: list[str], value: Any) -> dict:
    for k in reversed(keys):
        value = {k: value}
    return value


def load_experiment(path: str | Path, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """Read an experiment file, apply `key=value` overrides, validate, and resolve interpolations."""
    path = Path(path)
    raw = _read_yaml(path)
    cfg = OmegaConf.structured(ExperimentConfig)
    try:
        cfg = _merge(cfg, raw)
    except _Problem as p:
        raise ConfigError(f"{path}: {p}") from None
    for text in overrides:
        try:
            keys, value = parse_override(text)
            cfg = _merge(cfg, _nest(keys, value))
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None
        except _Problem as p:
            raise ConfigError(f"{path}: override {text!r}: {_detail(p, '.'.join(keys))}") from None
    try:
        exp = _finish(cfg, path)
    except _Problem as p:
        raise ConfigError(f"{path}: {p}") from None
    return exp


def _finish(cfg: DictConfig, path: Path) -> ExperimentConfig:
    """Required values present, interpolations resolved, ranges and the search space sane."""
    try:
        # a misspelt search key would otherwise show up as a missing `type` of a new entry
        for key, name in _space_names(cfg):
            _space_target(name, key)
        missing = sorted(OmegaConf.missing_keys(cfg))
        if missing:
            raise _Problem(missing[0], "missing value (required)")
        exp = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as err:
        raise _from_omegaconf(err) from None
    if exp.train.name is None:
        exp.train.name = path.stem
    _check_ranges(exp)
    if exp.tune is not None:
        _check_tune(exp.tune)
    return exp


def _space_names(cfg: DictConfig) -> list[tuple[str, str]]:
    """(error key, searched key) of every search space entry."""
    if cfg.tune is None:
        return []
    names = [(f"tune.space.{name}", name) for name in cfg.tune.space]
    for i, stage in enumerate(cfg.tune.stages):
        names += [(f"tune.stages[{i}].space.{name}", name) for name in stage.space]
    return names


_AT_LEAST = {
    "train.num_workers": 1,
    "train.batch_size": 1,
    "train.grad_accum": 1,
    "train.epochs": 1,
    "train.max_steps": 1,
    "train.log_every": 1,
    "train.eval_every": 1,
    "train.checkpoint_every": 1,
    "train.keep_checkpoints": 1,
    "train.threads": 0,
    "train.lr": 0,
    "train.warmup": 0,
    "data.max_text_len": 1,
    "data.image_size": 1,
    "data.map_batch_size": 1,
    "data.cpus_per_task": 0,
    "data.concurrency": 0,
    "data.shuffle_buffer": 1,
    "tune.num_samples": 1,
    "tune.max_concurrent": 1,
    "tune.scheduler.grace_period": 1,
    "tune.scheduler.reduction_factor": 2,
    "tune.sampler.n_startup_trials": 1,
}


def _check_ranges(exp: ExperimentConfig) -> None:
    towers = exp.model.init_towers
    if towers is not None and not towers.vision and not towers.text:
        raise _Problem("model.init_towers", "names no tower; give vision, text or both")
    if exp.train.compile_mode != "default" and exp.train.compile_backend != "inductor":
        raise _Problem(
            "train.compile_mode",
            f"{exp.train.compile_mode!r} is a mode of the inductor backend, not of "
            f"{exp.train.compile_backend!r}; set train.compile_backend=inductor or leave the mode at default",
        )
    if not 0 < exp.data.mlm_probability < 1:
        raise _Problem(
            "data.mlm_probability", f"must be between 0 and 1 (exclusive), got {exp.data.mlm_probability!r}"
        )
    for key, low in _AT_LEAST.items():
        section, *names = key.split(".")
        value = getattr(exp, section)
        for name in names:
            value = getattr(value, name) if value is not None else None
        if value is not None and value < low:
            raise _Problem(key, f"must be at least {low}, got {value!r}")


def _check_tune(tune: TuneConfig) -> None:
    for name, space in tune.space.items():
        _check_space(name, space, f"tune.space.{name}")
    for i, stage in enumerate(tune.stages):
        prefix = f"tune.stages[{i}]"
        for name, space in stage.space.items():
            _check_space(name, space, f"{prefix}.space.{name}")
        for j, text in enumerate(stage.overrides):
            try:
                keys, value = parse_override(text)
                _check(_nest(keys, value), ExperimentConfig, "")
            except (ConfigError, _Problem) as err:
                raise _Problem(f"{prefix}.overrides[{j}]", str(err)) from None
        if stage.num_samples < 1 or stage.top_k < 1:
            raise _Problem(prefix, "num_samples and top_k must be at least 1")
        if stage.max_concurrent is not None and stage.max_concurrent < 1:
            raise _Problem(f"{prefix}.max_concurrent", f"must be at least 1, got {stage.max_concurrent}")


def _check_space(name: str, space: ParamSpace, key: str) -> None:
    """A searched key must exist in the schema, and its range or choices must make sense."""
    hint, choices = _space_target(name, key)
    base, _ = _unwrap(hint)
    if dataclasses.is_dataclass(base) or typing.get_origin(base) is dict:
        raise _Problem(key, f"{name!r} is a section, not a value")
    if space.type == "choice":
        _check_choices(name, space, key, hint, choices)
    else:
        _check_range(name, space, key, base)


def _space_target(name: str, key: str) -> tuple[Any, tuple[str, ...]]:
    """(type hint, allowed values) of a searched key; _Problem at `key` when the schema has no such key."""
    try:
        return _locate(name.split("."), ExperimentConfig)[1:]
    except _Problem as p:
        if p.detail.startswith("unknown key; "):
            raise _Problem(key, f"unknown config key {name}; {p.detail.split('; ', 1)[1]}") from None
        raise _Problem(key, str(p)) from None


def _check_choices(name: str, space: ParamSpace, key: str, hint: Any, choices: tuple[str, ...]) -> None:
    if not space.values:
        raise _Problem(key, "choice needs a non-empty `values` list")
    for i, value in enumerate(space.values):
        try:
            _check(value, hint, name, choices)
        except _Problem as p:
            raise _Problem(f"{key}.values[{i}]", p.detail) from None


def _check_range(name: str, space: ParamSpace, key: str, base: Any) -> None:
    if base not in (int, float, Any):
        raise _Problem(key, f"{space.type} needs a numeric key, but {name} is {_describe(base)}")
    if space.low is None or space.high is None:
        raise _Problem(key, f"{space.type} needs both low and high")
    if space.low >= space.high:
        raise _Problem(key, f"low ({space.low:g}) must be below high ({space.high:g})")
    if (space.type == "loguniform" or space.log) and space.low <= 0:
        raise _Problem(key, f"a log scale needs low > 0, got {space.low:g}")
    if space.type == "int" and not (float(space.low).is_integer() and float(space.high).is_integer()):
        raise _Problem(key, "int needs whole-number low and high")
    if base is int and space.type != "int":
        raise _Problem(key, f"{name} is an int: use type int (or choice)")


# --- writing -----------------------------------------------------------------------------------------------


def to_yaml(cfg: ExperimentConfig | DictConfig) -> str:
    """The config as YAML with every interpolation resolved."""
    node = cfg if isinstance(cfg, DictConfig) else OmegaConf.structured(cfg)
    return OmegaConf.to_yaml(node, resolve=True)


def save_resolved(cfg: ExperimentConfig | DictConfig, path: str | Path) -> Path:
    """Write the fully resolved config to `path` (parents created); `load_experiment` reads it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg))
    return path


__all__ = [
    "ConfigError",
    "DataConfig",
    "ExperimentConfig",
    "ModelConfig",
    "ParamSpace",
    "SamplerConfig",
    "SchedulerConfig",
    "StageConfig",
    "TASKS",
    "TowersConfig",
    "TrackConfig",
    "TrainConfig",
    "TuneConfig",
    "load_experiment",
    "parse_override",
    "save_resolved",
    "to_yaml",
]
