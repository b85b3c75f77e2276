"""`btp bench ingest`: pretraining preprocessing through Ray Data into a train worker, a DataLoader, one process."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import torch.utils.data

from btp.data.pipeline import DataSpec, build_dataset, preprocess
from btp.data.synth import write_synthetic

COLUMNS = ["image", "caption", "image_id"]
CAPTIONS_PER_ROW = 5
# seconds for a fresh local Ray to finish starting (dashboard modules, prestarted workers) before a timed run
RAY_SETTLE_S = 5.0


class PeakMemory:
    """Samples RSS of this process (the driver), of its largest descendant, and of all of them together."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self._stop = interval, threading.Event()
        self.peak = self.driver = self.largest_child = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            children = []
            for p in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                    children.append(p.memory_info().rss)
            driver = me.memory_info().rss
            self.driver = max(self.driver, driver)
            self.largest_child = max([self.largest_child, *children])
            self.peak = max(self.peak, driver + sum(children))
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _table(paths: list[str], rows: int) -> pa.Table:
    tables = [pa.ipc.open_file(pa.memory_map(p)).read_all().select(COLUMNS) for p in paths]
    return pa.concat_tables(tables).slice(0, rows)


def _consume(batches, rows: int) -> dict[str, float]:
    """Iterate until `rows` samples arrived: seconds to the first batch and to the last, samples seen."""
    start = time.perf_counter()
    first, seen = None, 0
    for batch in batches:
        seen += len(batch["input_ids"])
        first = first or time.perf_counter()
        if seen >= rows:
            break
    end = time.perf_counter()
    return {"first_batch_s": (first or end) - start, "total_s": end - start, "rows": seen}


def _two_passes(passes, rows: int) -> dict[str, float]:
    """A cold pass (start-up included: its first batch is `first_batch_s`), then a warm pass over the same rows,
    timed from the moment it is asked for to its last batch (`rows_per_s`)."""
    start = time.perf_counter()
    cold = _consume(next(passes), rows)
    warm = _consume(next(passes), rows)
    return {
        "first_batch_s": cold["first_batch_s"],
        "cold_s": cold["total_s"],
        "rows": warm["rows"],
        "warm_s": warm["total_s"],
        "rows_per_s": warm["rows"] / warm["total_s"],
        "total_s": time.perf_counter() - start,
    }


def single_process(table: pa.Table, spec: DataSpec, rows: int) -> dict[str, float]:
    block = spec.map_batch_size

    def passes():
        while True:
            yield (preprocess(table.slice(i, block), spec) for i in range(0, table.num_rows, block))

    return _two_passes(passes(), rows)


class _Batches(torch.utils.data.IterableDataset):
    """Iterable dataset: each DataLoader worker runs exactly the Ray map function on every n-th block of rows and
    hands over its samples in batches of `batch`, the size Ray Data gives the train worker. (Handing over whole
    blocks, ~5 samples per row, would spare the DataLoader 4 of every 5 hand-overs that Ray Data makes.)"""

    def __init__(self, table: pa.Table, spec: DataSpec, batch: int) -> None:
        self.table, self.spec, self.batch = table, spec, batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.spec.map_batch_size
        for start in range(worker * b, self.table.num_rows, workers * b):
            samples = preprocess(self.table.slice(start, b), self.spec)
            n = len(samples["input_ids"])
            for i in range(0, n, self.batch):
                yield {key: value[i : i + self.batch] for key, value in samples.items()}


def dataloader(table: pa.Table, spec: DataSpec, rows: int, workers: int, batch: int) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(
        _Batches(table, spec, batch),
        batch_size=None,
        num_workers=workers,
        # two preprocessed blocks of look-ahead per worker, as when a worker handed over whole blocks
        prefetch_factor=max(2, math.ceil(2 * CAPTIONS_PER_ROW * spec.map_batch_size / batch)),
        persistent_workers=True,
    )

    def passes():
        while True:
            yield iter(loader)

    return _two_passes(passes(), rows)


def dataloader_beside_ray(
    table: pa.Table, spec: DataSpec, rows: int, workers: int, batch: int
) -> dict[str, float]:
    """The DataLoader again, with an idle local Ray on the same cores (started as ray_data starts it): what Ray's
    own processes (raylet, GCS, dashboard, agents, idle workers) cost any pipeline, apart from Ray Data."""
    import ray

    from btp.train.run import ray_session

    with ray_session(num_cpus=workers, log_to_driver=False):
        ray.get(ray.remote(lambda: None).remote())  # started and answering, as when a run begins
        time.sleep(RAY_SETTLE_S)
        return dataloader(table, spec, rows, workers, batch)


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")

    def passes():
        while True:
            yield iter(shard.iter_torch_batches(batch_size=config["batch"], prefetch_batches=4))

    result = _two_passes(passes(), config["rows"])
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["out"]).write_text(json.dumps(result))


def ray_data(spec: DataSpec, rows: int, workers: int, batch: int) -> dict[str, float]:
    """Ray Data map tasks feed one Ray Train worker through get_dataset_shard, all on `workers` CPUs."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from btp.train.run import ingest_config, ray_session

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    start = time.perf_counter()
    # the train worker takes half a CPU: on small hosts more CPUs than cores would oversubscribe them; a
    # dashboard of its own, as `btp train` starts Ray (local_ray_options says why)
    with ray_session(num_cpus=workers, log_to_driver=False):
        ray.data.DataContext.get_current().enable_progress_bars = False
        # btp train's own pipeline: tasks reserve a fraction of a CPU (they fit beside the train worker), and at
        # most `workers` of them run at once, the DataLoader's number of processes; files in the same order
        ds = build_dataset(dataclasses.replace(spec, concurrency=workers, shuffle_files=False)).limit(rows)
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            trainer = TorchTrainer(
                _train_worker,
                train_loop_config={"batch": batch, "rows": rows, "out": str(out)},
                scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 0.5}),
                datasets={"train": ds},
                dataset_config=ingest_config(1),  # read as btp train reads them
                run_config=RunConfig(name="bench_ingest", storage_path=tmp),
            )
            trainer.fit()
            result = json.loads(out.read_text())
    result["wall_s_with_startup"] = time.perf_counter() - start
    return result


def write_noise_shards(out: Path, gigabytes: float, rows_per_shard: int = 200, side: int = 512) -> int:
    """Caption shards of incompressible JPEGs (~235 KB each) adding up to `gigabytes`; returns the row count."""
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    schema = pa.schema(
        [("image", pa.binary()), ("caption", pa.list_(pa.string())), ("image_id", pa.string())]
    )
    written, rows, shard = 0, 0, 0
    while written < gigabytes * 1e9:
        images = []
        for _ in range(rows_per_shard):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
                buf, format="JPEG", quality=90
            )
            images.append(buf.getvalue())
        table = pa.table(
            {
                "image": images,
                "caption": [["a picture of noise"]] * len(images),
                "image_id": [f"noise-{rows + i}" for i in range(len(images))],
            },
            schema=schema,
        )
        with pa.ipc.new_file(str(out / f"coco_caption_karpathy_train_{shard}.arrow"), schema) as writer:
            writer.write_table(table)
        written += sum(map(len, images))
        rows, shard = rows + len(images), shard + 1
    return rows


def run_stream_bench(args: argparse.Namespace) -> int:
    """Stream a large set of shards through the pipeline, reporting peak memory of the driver and workers."""
    import ray

    from btp.data.shards import read_shards
    from btp.train.run import LOCAL_RAY_SYSTEM_CONFIG

    with tempfile.TemporaryDirectory(dir=args.data_dir) as data:
        print(f"btp bench ingest --stream-gb {args.stream_gb}: writing noise shards ...", flush=True)
        rows = write_noise_shards(Path(data), args.stream_gb)
        size = sum(f.stat().st_size for f in Path(data).glob("*.arrow"))
        write_synthetic(Path(data) / "vocab", images=60)  # only for its tokenizer
        spec = DataSpec(
            task="pretrain",
            paths=[str(Path(data) / "*.arrow")],
            tokenizer=str(Path(data) / "vocab" / "tokenizer"),
            image_size=args.image_size,
            map_batch_size=args.map_rows,
        )
        print(
            f"  {rows} rows in {size / 1e9:.2f} GB of shards; streaming them through decode, transform, "
            f"tokenize and mask on {args.workers} CPUs",
            flush=True,
        )
        ray.init(
            num_cpus=args.workers,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=512 * 2**20,
            _system_config=dict(LOCAL_RAY_SYSTEM_CONFIG),  # as every local Ray of btp: no idle extras
        )
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            ds = read_shards(spec.paths, columns=COLUMNS)
            ds = ds.map_batches(
                preprocess, fn_kwargs={"spec": spec}, batch_size=args.map_rows, batch_format="pyarrow"
            )
            with PeakMemory() as memory:
                result = _consume(ds.iter_batches(batch_size=args.batch), rows)
        finally:
            ray.shutdown()
    report = {
        "stream_gb": size / 1e9,
        "rows": result["rows"],
        "seconds": result["total_s"],
        "driver_peak_rss_mb": memory.driver / 2**20,
        "largest_worker_peak_rss_mb": memory.largest_child / 2**20,
        "process_tree_peak_rss_mb": memory.peak / 2**20,
        "object_store_mb": 512,
    }
    print(
        f"  {report['rows']} rows in {report['seconds']:.0f} s; peak RSS: driver {report['driver_peak_rss_mb']:.0f} MB, "
        f"largest worker {report['largest_worker_peak_rss_mb']:.0f} MB, all processes "
        f"{report['process_tree_peak_rss_mb']:.0f} MB (object store capped at 512 MB)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    return 0


def run_ingest_bench(args: argparse.Namespace) -> int:
    if getattr(args, "stream_gb", None):
        return run_stream_bench(args)
    report: dict[str, Any] = {
        "rows": args.rows,
        "batch": args.batch,
        "image_size": args.image_size,
        "workers": args.workers,
    }
    with tempfile.TemporaryDirectory() as data:
        print(
            f"btp bench ingest: {args.rows} pretraining samples, batch {args.batch}, {args.image_size} px, "
            f"{args.workers} data processes",
            flush=True,
        )
        images = max(60, math.ceil(args.rows / CAPTIONS_PER_ROW / 0.3))  # captions get ~30 % of the pictures
        write_synthetic(data, images=images, seed=0, image_size=max(64, args.image_size))
        paths = sorted(str(p) for p in Path(data).glob("coco_caption_karpathy_*.arrow"))
        spec = DataSpec(
            task="pretrain",
            paths=paths,
            tokenizer=str(Path(data) / "tokenizer"),
            image_size=args.image_size,
            max_text_len=40,
            transform="clip",
            map_batch_size=args.map_rows,
        )
        table = _table(paths, math.ceil(args.rows / CAPTIONS_PER_ROW))
        for name, run in (
            ("single_process", lambda: single_process(table, spec, args.rows)),
            ("dataloader", lambda: dataloader(table, spec, args.rows, args.workers, args.batch)),
            ("ray_data", lambda: ray_data(spec, args.rows, args.workers, args.batch)),
            (
                "dataloader_beside_ray",
                lambda: dataloader_beside_ray(table, spec, args.rows, args.workers, args.batch),
            ),
        ):
            with PeakMemory() as memory:
                result = run()
            result["peak_rss_mb"] = memory.peak / 2**20
            report[name] = result
            print(
                f"  {name:<22} {result['rows_per_s']:7.0f} rows/s warm   first pass {result['cold_s']:5.2f} s "
                f"(first batch {result['first_batch_s']:5.2f} s)   "
                f"peak RSS (process tree) {result['peak_rss_mb']:5.0f} MB",
                flush=True,
            )
    ray_, loader = report["ray_data"], report["dataloader"]
    report["ratio"] = ray_["rows_per_s"] / loader["rows_per_s"]
    report["ratio_cold"] = loader["cold_s"] / ray_["cold_s"]
    beside = report["dataloader_beside_ray"]
    report["ratio_beside_ray"] = ray_["rows_per_s"] / beside["rows_per_s"]
    report["ray_host_slowdown"] = 1 - beside["rows_per_s"] / loader["rows_per_s"]
    print(
        f"  ratio Ray Data / DataLoader: {report['ratio']:.2f}x warm, {report['ratio_cold']:.2f}x on the first pass "
        f"(Ray wall time with cluster and trainer start-up: {ray_['wall_s_with_startup']:.1f} s)"
    )
    print(
        f"  ratio Ray Data / DataLoader beside an idle local Ray: {report['ratio_beside_ray']:.2f}x warm (Ray's own "
        f"processes on the same cores: DataLoader {report['ray_host_slowdown']:.0%} slower)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    return 0
