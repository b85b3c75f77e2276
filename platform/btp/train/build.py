"""From an experiment config to the things a run needs: the model, the data specs, the sample count."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pyarrow as pa
import torch
from torch import nn

from bridgetower import TASK_MODELS, BridgeTowerConfig
from btp.config import ConfigError, ExperimentConfig
from btp.data.pipeline import DataSpec
from btp.data.shards import expand
from btp.data.validate import dataset_of

# the config's task names -> bridgetower's task model keys
MODEL_TASKS = {
    "pretrain": "pretrain",
    "irtr": "irtr",
    "vqa": "vqa",
    "nlvr2": "nlvr2",
    "snli_ve": "snli_ve",
    "image_classification": "image_classification",
    "text_classification": "text_classification",
}
# the list column whose length is the number of samples a row expands to
SAMPLE_COLUMN = {
    "pretrain": "caption",
    "irtr": "caption",
    "vqa": "questions",
    "nlvr2": "questions",
    "snli_ve": "labels",
    "image_classification": "label",  # one sample per row
    "text_classification": "label",
}
CLASSIFICATION = ("image_classification", "text_classification")


class DataMissingError(SystemExit):
    """The experiment's data is not where `data.root` says."""


def shard_paths(cfg: ExperimentConfig, split: str) -> list[str]:
    """The split's shard patterns, relative to data.root unless absolute or a URI, expanded."""
    root = Path(cfg.data.root)
    patterns = getattr(cfg.data, split)
    full = [p if "://" in p or Path(p).is_absolute() else str(root / p) for p in patterns]
    try:
        return expand(full)
    except FileNotFoundError as err:
        missing = str(err).split(";")[0]  # "no shard matches '...'", without the generic advice
        present = sorted(p.name for p in root.glob("*.arrow")) if root.is_dir() else []
        if present:
            shown = ", ".join(present[:3]) + (", ..." if len(present) > 3 else "")
            hint = f"{root} holds {len(present)} other shards ({shown}): check the pattern in data.{split}"
        elif "synth" in str(root):
            hint = f"run `btp data synth {root}` to create it"
        else:
            hint = f"check data.root ({root}), or write the shards there with `btp data convert`"
        raise DataMissingError(f"data.{split}: {missing}; {hint}") from None


def vqa_num_labels(cfg: ExperimentConfig) -> int | None:
    if cfg.data.task != "vqa":
        return None
    path = Path(cfg.data.vqa_answers or "")
    if not path.is_file():
        raise DataMissingError(
            f"data.vqa_answers: {path} not found (the answer vocabulary of the VQA shards)"
        )
    return len(json.loads(path.read_text()))


def labels_file(cfg: ExperimentConfig) -> Path | None:
    """The class-name file of a classification experiment: `data.labels`, else `{dataset}_labels.json`.

    The default lies beside the training shards (`cifar10_labels.json`, `glue_sst2_labels.json`), where
    `btp data convert` and `btp data synth` write it.
    """
    if cfg.data.labels:
        return Path(cfg.data.labels)
    first = shard_paths(cfg, "train")[0]
    name = dataset_of(Path(first))
    return Path(first).parent / f"{name}_labels.json" if name and "://" not in first else None


def num_labels(cfg: ExperimentConfig) -> int | None:
    """Classes of an image/text classification experiment: from its labels file, else model.config.num_labels."""
    if cfg.data.task not in CLASSIFICATION:
        return None
    configured = cfg.model.config.get("num_labels")
    path = labels_file(cfg)
    if path is not None and path.is_file():
        try:
            names = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"data.labels: {path} is not valid JSON ({err}); it should list the class names"
            ) from None
        if not isinstance(names, list) or not names:
            raise ConfigError(f"data.labels: {path} should hold a JSON list of class names")
        if configured is not None and configured != len(names):
            raise ConfigError(
                f"model.config.num_labels: {configured}, but {path} names {len(names)} classes; "
                "remove one of the two or make them agree"
            )
        return len(names)
    if cfg.data.labels:
        raise DataMissingError(
            f"data.labels: {path} not found (the class names of the {cfg.data.task} shards)"
        )
    if configured is None:
        where = f"no {path.name} beside the training shards" if path else "no labels file for these shards"
        raise DataMissingError(
            f"data.task {cfg.data.task} needs its number of classes: {where}. Write it (a JSON list of class "
            "names, as `btp data convert` and `btp data synth` do), point data.labels at one, "
            "or set model.config.num_labels"
        )
    return int(configured)


def model_config(cfg: ExperimentConfig) -> BridgeTowerConfig:
    """The preset, with the experiment's bridge, depth and free-form overrides."""
    overrides = dict(cfg.model.config)
    overrides["bridge"] = cfg.model.bridge
    if cfg.model.num_layers is not None:
        overrides["num_layers"] = cfg.model.num_layers
    if cfg.data.image_size is not None:
        overrides.setdefault("vision", {})["image_size"] = cfg.data.image_size
    labels = vqa_num_labels(cfg)
    if labels is not None:
        overrides["vqa_num_labels"] = labels
    classes = num_labels(cfg)
    if classes is not None:
        overrides["num_labels"] = classes
    overrides["gradient_checkpointing"] = cfg.model.gradient_checkpointing
    return BridgeTowerConfig.preset(cfg.model.preset, **overrides)


def build_model(cfg: ExperimentConfig) -> nn.Module:
    """The task model: fresh, from a checkpoint (`init_from`, which may be `runs/NAME`), or from two towers."""
    cls = TASK_MODELS[MODEL_TASKS[cfg.data.task]]
    config = model_config(cfg)
    torch.manual_seed(
        cfg.train.seed
    )  # whatever starts fresh (heads, a tower left out) is the same on every rank
    if cfg.model.init_from:
        source = Path(cfg.model.init_from)
        if (source / "model" / "config.json").is_file():  # an earlier run of ours: its final weights
            source = source / "model"
        keep = {
            k: v
            for k, v in config.to_dict().items()
            if k in ("vqa_num_labels", "num_labels", "gradient_checkpointing")
        }
        # the checkpoint's config, changed where the experiment says (model.config: the task's loss and head,
        # dropout, ...; a size that does not fit the weights is one clear error listing the mis-shaped keys)
        said = copy.deepcopy(dict(cfg.model.config))
        return cls.from_pretrained(str(source), **said, image_size=config.vision.image_size, **keep)
    if cfg.model.init_towers:
        towers = cfg.model.init_towers
        # the experiment's picture size wins over the tower's: its position table is resized once, when loaded
        return cls.from_towers(towers.vision, towers.text, config=config, image_size=config.vision.image_size)
    return cls(config)


def data_spec(
    cfg: ExperimentConfig, split: str, image_size: int, epoch: int = 0, concurrency: int | None = None
) -> DataSpec:
    """The pipeline's settings for one split; `concurrency` overrides data.concurrency (see data_concurrency)."""
    d = cfg.data
    return DataSpec(
        task=d.task,
        paths=shard_paths(cfg, split),
        tokenizer=d.tokenizer,
        image_size=image_size,
        max_text_len=d.max_text_len,
        mlm_probability=d.mlm_probability,
        transform=d.transform if split == "train" else d.eval_transform,
        seed=cfg.train.seed,
        epoch=epoch,
        vqa_num_labels=vqa_num_labels(cfg),
        num_labels=num_labels(cfg),
        on_bad_row=d.on_bad_row,
        map_batch_size=d.map_batch_size,
        cpus_per_task=d.cpus_per_task,
        concurrency=d.concurrency if concurrency is None else concurrency,
        shuffle_files=split == "train",
    )


def data_concurrency(cfg: ExperimentConfig, cluster_cpus: float, nodes: int) -> int:
    """data.concurrency, or for 0 on one machine: its CPUs left beside the training workers (at least 1).

    Data tasks reserve a fraction of a CPU (data.cpus_per_task) so they always fit beside fractional train
    workers; without a cap, a small machine would run several at once, each process importing the libraries
    and all of them sharing its cores with the training step. On a cluster (more than one node) the CPUs
    Ray can schedule decide, as Ray's own default does.
    """
    if cfg.data.concurrency or nodes > 1:
        return cfg.data.concurrency
    t = cfg.train
    return max(1, int(cluster_cpus - t.num_workers * t.cpus_per_worker))


def count_samples(task: str, paths: list[str]) -> int:
    """Samples the shards expand to, read from one list column only (no images are loaded)."""
    column = SAMPLE_COLUMN[task]
    total = 0
    for path in paths:
        if path.endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(path, columns=[column])
        else:
            with pa.memory_map(path) as source:
                table = pa.ipc.open_file(source).read_all().select([column])
        if not pa.types.is_list(table.schema.field(column).type):  # one sample per row
            total += table.num_rows
            continue
        total += int(pa.compute.sum(pa.compute.list_value_length(table.column(column))).as_py() or 0)
    return total
