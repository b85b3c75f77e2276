"""The Ray Data pipeline on a real local Ray: every task's batches, and bad data named by file, row and column."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from btp.data.pipeline import DataSpec, build_dataset, preprocess, preprocess_blocks, skipped_rows
from btp.data.synth import write_synthetic

FILES = {
    "pretrain": "coco_caption_karpathy",
    "irtr": "f30k_caption_karpathy",
    "vqa": "vqav2",
    "nlvr2": "nlvr2",
    "snli_ve": "snli",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=60, seed=3, rows_per_shard=8)
    return out


def spec(synth, task: str, paths=None, **kw) -> DataSpec:
    labels = len(json.loads((synth / "vqa_answers.json").read_text()))
    return DataSpec(
        task=task,
        paths=paths or [str(synth / f"{FILES[task]}_train_*.arrow")],
        tokenizer=str(synth / "tokenizer"),
        image_size=64,
        max_text_len=24,
        vqa_num_labels=labels,
        map_batch_size=8,
        **kw,
    )


@pytest.mark.parametrize("task", list(FILES))
def test_every_task_streams_fixed_shape_batches(local_ray, synth, task):
    ds = build_dataset(spec(synth, task))
    batch = next(iter(ds.iter_torch_batches(batch_size=4)))
    assert batch["input_ids"].shape == (min(4, ds.count()), 24)
    assert batch["pixel_values"].shape[-3:] == (3, 64, 64)
    expected = {
        "pretrain": "mlm_labels",
        "irtr": "image_index",
        "vqa": "labels",
        "nlvr2": "labels",
        "snli_ve": "labels",
    }[task]
    assert expected in batch


def test_same_seed_same_batches(local_ray, synth):
    first = build_dataset(spec(synth, "pretrain")).take(5)
    again = build_dataset(spec(synth, "pretrain")).take(5)
    for a, b in zip(first, again):
        assert (a["mlm_input_ids"] == b["mlm_input_ids"]).all() and (
            a["pixel_values"] == b["pixel_values"]
        ).all()


def test_reading_and_preprocessing_run_in_one_fused_task(local_ray, synth, tmp_path):
    """The read blocks must not go through the object store between reading and preprocessing. Ray Data fuses
    them when it need not split read outputs for parallelism: here, more files than 2 x the 2 CPUs."""
    paths = sorted(synth.glob("coco_caption_karpathy_train_*.arrow"))
    table = pa.concat_tables(pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in paths)
    files = 6
    for i in range(files):
        part = table.slice(i * table.num_rows // files, table.num_rows // files)
        with pa.ipc.new_file(str(tmp_path / f"coco_caption_karpathy_train_{i}.arrow"), table.schema) as w:
            w.write_table(part)
    ds = build_dataset(spec(synth, "pretrain", paths=[str(tmp_path / "*.arrow")], concurrency=2))
    rows = sum(len(b["input_ids"]) for b in ds.iter_batches(batch_size=None))
    assert rows == 5 * files * (table.num_rows // files)
    assert "ReadArrowIPC->MapBatches(preprocess_blocks)" in ds.stats(), ds.stats()


def test_blocks_of_any_size_are_preprocessed_map_batch_size_rows_at_a_time(synth):
    paths = sorted(synth.glob("coco_caption_karpathy_train_*.arrow"))
    table = pa.concat_tables(pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in paths[:3])
    table = table.select(["image", "caption", "image_id"]).slice(0, 13)  # map batches of 8 rows: 8 + 5
    sizes = [len(b["input_ids"]) for b in preprocess_blocks(table, spec(synth, "pretrain"))]
    assert sizes == [5 * 8, 5 * 5]


@pytest.mark.parametrize("transform", ["clip", "blip_randaug_wc"])
def test_a_picture_is_transformed_once_only_when_the_transform_draws_nothing(synth, transform):
    """The five captions of a picture share its pixels under `clip`; a random transform draws per caption."""
    path = sorted(synth.glob("coco_caption_karpathy_train_*.arrow"))[0]
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all().slice(0, 2)
    pixels = preprocess(table, spec(synth, "pretrain", transform=transform))["pixel_values"]
    assert len(pixels) == 10
    same = [(pixels[i] == pixels[0]).all() for i in range(5)] + [
        (pixels[i] == pixels[5]).all() for i in range(5, 10)
    ]
    assert all(same) if transform == "clip" else not all(same)
    assert not (pixels[0] == pixels[5]).all()  # and never across pictures
    # the work itself: a deterministic transform returns the pixels it already made for this picture
    import random

    from bridgetower.transforms import decode_image
    from btp.data.pipeline import _image_fn

    image = _image_fn(spec(synth, "pretrain", transform=transform))
    picture = decode_image(table.column("image")[0].as_py())
    first, again = image(picture, random.Random(0)), image(picture, random.Random(1))
    assert (first is again) == (transform == "clip")


def corrupt(synth, tmp_path, name: str, column: str, row: int, value) -> str:
    src = sorted(synth.glob(f"{name}_train_*.arrow"))[0]
    table = pa.ipc.open_file(pa.memory_map(str(src))).read_all()
    values = table.column(column).to_pylist()
    values[row] = value
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )
    out = tmp_path / src.name
    with pa.ipc.new_file(str(out), table.schema) as writer:
        writer.write_table(table)
    return str(out)


def test_corrupt_image_is_named_and_can_be_skipped(local_ray, synth, tmp_path):
    path = corrupt(synth, tmp_path, "coco_caption_karpathy", "image", 2, b"not a png")
    with pytest.raises(
        Exception, match=r"coco_caption_karpathy_train_0\.arrow row 2: column image: cannot decode"
    ):
        build_dataset(spec(synth, "pretrain", paths=[path])).take_all()
    good = pa.ipc.open_file(pa.memory_map(path)).read_all()
    expected = sum(len(c) for i, c in enumerate(good.column("caption").to_pylist()) if i != 2)
    skipping = spec(synth, "pretrain", paths=[path], on_bad_row="skip")
    assert build_dataset(skipping).count() == expected
    skipped = skipped_rows(skipping)
    assert skipped["count"] == 1 and "row 2: column image: cannot decode" in skipped["messages"][0]


def test_bad_labels_are_named(local_ray, synth, tmp_path):
    path = corrupt(synth, tmp_path, "vqav2", "answer_labels", 1, [[999]] * 5)
    with pytest.raises(Exception, match=r"vqav2_train_0\.arrow row 1: answer label 999 is outside"):
        build_dataset(spec(synth, "vqa", paths=[path])).take_all()
    missing = tmp_path / "no_caption.arrow"
    shutil.copy(sorted(synth.glob("snli_train_*.arrow"))[0], missing)
    with pytest.raises(Exception, match="missing column"):
        build_dataset(spec(synth, "pretrain", paths=[str(missing)])).take_all()


def cls_spec(synth, task: str, paths=None, **kw) -> DataSpec:
    prefix = "shapes" if task == "image_classification" else "sentiment"
    return spec(
        synth,
        task,
        paths=paths or [str(synth / f"{prefix}_train_*.arrow")],
        num_labels=len(json.loads((synth / f"{prefix}_labels.json").read_text())),
        **kw,
    )


def test_classification_batches_hold_their_modality_and_labels(local_ray, synth, tmp_path):
    images = build_dataset(cls_spec(synth, "image_classification", transform="clip")).take_batch(5)
    assert set(images) == {"pixel_values", "labels", "sample_id"}
    assert images["pixel_values"].shape == (5, 3, 64, 64) and images["pixel_values"].dtype == "uint8"
    texts = build_dataset(cls_spec(synth, "text_classification")).take_batch(8)
    assert set(texts) == {"input_ids", "attention_mask", "labels", "sample_id"} and texts[
        "input_ids"
    ].shape == (8, 24)
    # every sentence keeps its own label
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    truth = {}
    for path in synth.glob("sentiment_train_*.arrow"):
        for row in pa.ipc.open_file(pa.memory_map(str(path))).read_all().to_pylist():
            truth[row["sentence"]] = row["label"]
    for ids, label in zip(texts["input_ids"], texts["labels"]):
        assert truth[tokenizer.decode(ids, skip_special_tokens=True)] == label
    # parquet with a second sentence: read where present, tokenized as a pair
    import pyarrow.parquet as pq

    pairs = pa.table(
        {"sentence": ["the film was good"] * 3, "sentence2": ["the food was bad"] * 3, "label": [0, 1, 1]}
    )
    pq.write_table(pairs, tmp_path / "glue_rte_train_0.parquet")
    batch = build_dataset(
        cls_spec(synth, "text_classification", paths=[str(tmp_path / "glue_rte_train_0.parquet")])
    )
    ids = batch.take_batch(3)["input_ids"]
    assert ids.shape == (3, 24) and all((row == 2).sum() == 3 for row in ids)  # <s> A </s></s> B </s>


def test_bad_classification_rows_are_named(local_ray, synth, tmp_path):
    path = corrupt(synth, tmp_path, "shapes", "label", 1, 99)
    with pytest.raises(
        Exception, match=r"shapes_train_0\.arrow row 1: label 99 is outside the classes 0\.\.11"
    ):
        build_dataset(cls_spec(synth, "image_classification", paths=[path])).take_all()
    path = corrupt(synth, tmp_path, "shapes", "image", 2, b"not a png")
    with pytest.raises(Exception, match=r"shapes_train_0\.arrow row 2: column image: cannot decode"):
        build_dataset(cls_spec(synth, "image_classification", paths=[path])).take_all()
    missing = tmp_path / "sentiment_train_9.arrow"
    shutil.copy(sorted(synth.glob("shapes_train_*.arrow"))[0], missing)
    with pytest.raises(Exception, match=r"sentiment_train_9.arrow: missing column\(s\) sentence"):
        build_dataset(cls_spec(synth, "text_classification", paths=[str(missing)])).take_all()


@pytest.mark.parametrize("workers", [2, 1])
def test_train_workers_get_disjoint_streams_that_cover_the_data(local_ray, synth, tmp_path, workers):
    """Read as `btp train` reads (ingest_config): two workers split the stream through Ray Data's coordinator
    process; a lone worker reads the whole stream itself, with no coordinator."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.util.state import list_actors

    from btp.train.run import ingest_config

    # defined here so Ray pickles it by value (the tests folder is not importable in workers)
    def _collect_ids(config):
        import ray.train

        from btp.data.pipeline import train_batches

        ids = []
        for batch in train_batches(batch_size=8, shuffle_buffer=16, seed=config["seed"]):
            ids.extend(batch["sample_id"].tolist())
        rank = ray.train.get_context().get_world_rank()
        (Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(ids))

    def coordinators() -> int:
        return len(list_actors(filters=[("class_name", "=", "SplitCoordinator")], limit=1000, timeout=30))

    before = coordinators()
    data = spec(synth, "snli_ve")
    expected = sorted(build_dataset(data).to_pandas()["sample_id"].tolist())
    TorchTrainer(
        _collect_ids,
        train_loop_config={"out": str(tmp_path), "seed": 0},
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=False, resources_per_worker={"CPU": 0.5}),
        datasets={"train": build_dataset(data)},
        dataset_config=ingest_config(workers),
        run_config=RunConfig(name="shards", storage_path=str(tmp_path / "runs")),
    ).fit()
    streams = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in range(workers)]
    assert all(streams) and sorted(sum(streams, [])) == expected  # every sample once
    assert coordinators() - before == (1 if workers > 1 else 0)


def test_the_local_rays_own_processes_find_its_run_through_its_own_state_api(local_ray):
    """Ray Train's placement-group cleaner, a detached actor, asks the State API every second whether the run's
    controller lives and removes the run's workers when it is not found there. A Ray started as `btp train`
    starts one (ray_session) must answer that itself: its processes ask its own dashboard, not whatever serves
    the default port 8265 (another Ray on the machine, which knows no such actor) and not a guess among the
    machine's Rays (which Ray refuses to make)."""
    import os

    import ray
    from ray.util.state import get_actor

    @ray.remote(num_cpus=0)
    class Probe:
        def ask(self, actor_id: str) -> tuple[str | None, str | None]:
            state = get_actor(actor_id, timeout=20)
            return os.environ.get("RAY_API_SERVER_ADDRESS"), state.state if state else None

    probe = Probe.remote()
    api_server, state = ray.get(probe.ask.remote(probe._actor_id.hex()), timeout=60)
    assert api_server == os.environ["RAY_API_SERVER_ADDRESS"] != "http://127.0.0.1:8265"
    assert state == "ALIVE"


def test_the_local_ray_runs_without_metrics_export_or_prestarted_workers(local_ray):
    """A Ray started by ray_session (`btp train`, tune, quickstart, the benches) holds Ray's settings of
    LOCAL_RAY_SYSTEM_CONFIG: no metrics export and no Python workers started ahead of need, whose idle processes
    cost each run's cores."""
    from ray._private.state import state

    from btp.train.run import LOCAL_RAY_SYSTEM_CONFIG

    held = state.get_system_config()
    assert (
        LOCAL_RAY_SYSTEM_CONFIG
        and {key: held.get(key) for key in LOCAL_RAY_SYSTEM_CONFIG} == LOCAL_RAY_SYSTEM_CONFIG
    )
