"""`btp bench ingest`: pretraining preprocessing through Ray Data into a train worker, a DataLoader, one process."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa

from btp.data.pipeline import DataSpec, preprocess
from btp.data.synth import write_synthetic

COLUMNS = ["image", "caption", "image_id"]
CAPTIONS_PER_ROW = 5


class PeakMemory:
    """Samples the summed RSS of this process and all its descendants (Ray's and DataLoader's workers)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a worker may exit between listing and reading
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
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
    """Iterate until `rows` samples arrived: seconds to the first batch, and samples/s after it (steady state)."""
    start = time.perf_counter()
    first, first_rows, seen = None, 0, 0
    for batch in batches:
        seen += len(batch["input_ids"])
        if first is None:
            first, first_rows = time.perf_counter(), seen
        if seen >= rows:
            break
    end = time.perf_counter()
    first = first or end
    steady = (seen - first_rows) / (end - first) if end > first else float("nan")
    return {"first_batch_s": first - start, "rows_per_s": steady, "total_s": end - start, "rows": seen}


def single_process(table: pa.Table, spec: DataSpec, rows: int) -> dict[str, float]:
    block = spec.map_batch_size
    return _consume((preprocess(table.slice(i, block), spec) for i in range(0, table.num_rows, block)), rows)


class _Blocks:
    """Map-style dataset of row blocks, so DataLoader workers run exactly the Ray map function."""

    def __init__(self, table: pa.Table, spec: DataSpec) -> None:
        self.table, self.spec = table, spec

    def __len__(self) -> int:
        return math.ceil(self.table.num_rows / self.spec.map_batch_size)

    def __getitem__(self, i: int) -> dict[str, Any]:
        b = self.spec.map_batch_size
        return preprocess(self.table.slice(i * b, b), self.spec)


def dataloader(table: pa.Table, spec: DataSpec, rows: int, workers: int) -> dict[str, float]:
    import torch.utils.data

    loader = torch.utils.data.DataLoader(
        _Blocks(table, spec),
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        persistent_workers=False,
    )
    return _consume(iter(loader), rows)


def _train_worker(config: dict[str, Any]) -> None:
    import ray.train

    shard = ray.train.get_dataset_shard("train")
    result = _consume(
        shard.iter_torch_batches(batch_size=config["batch"], prefetch_batches=4), config["rows"]
    )
    if ray.train.get_context().get_world_rank() == 0:
        Path(config["out"]).write_text(json.dumps(result))


def ray_data(paths: list[str], spec: DataSpec, rows: int, workers: int, batch: int) -> dict[str, float]:
    """Ray Data map tasks feed one Ray Train worker through get_dataset_shard, all on `workers` CPUs."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from btp.data.shards import read_shards

    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    start = time.perf_counter()
    # the train worker takes half a CPU: on small hosts more CPUs than cores would oversubscribe them
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        ds = read_shards(paths, columns=COLUMNS).limit(math.ceil(rows / CAPTIONS_PER_ROW))
        ds = ds.map_batches(
            preprocess, fn_kwargs={"spec": spec}, batch_size=spec.map_batch_size, batch_format="pyarrow"
        )
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "result.json"
            trainer = TorchTrainer(
                _train_worker,
                train_loop_config={"batch": batch, "rows": rows, "out": str(out)},
                scaling_config=ScalingConfig(num_workers=1, use_gpu=False, resources_per_worker={"CPU": 0.5}),
                datasets={"train": ds},
                run_config=RunConfig(name="bench_ingest", storage_path=tmp),
            )
            trainer.fit()
            result = json.loads(out.read_text())
    finally:
        ray.shutdown()
    result["wall_s_with_startup"] = time.perf_counter() - start
    return result


def run_ingest_bench(args: argparse.Namespace) -> int:
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
            map_batch_size=max(1, args.batch // CAPTIONS_PER_ROW),
        )
        table = _table(paths, math.ceil(args.rows / CAPTIONS_PER_ROW))
        for name, run in (
            ("single_process", lambda: single_process(table, spec, args.rows)),
            ("dataloader", lambda: dataloader(table, spec, args.rows, args.workers)),
            ("ray_data", lambda: ray_data(paths, spec, args.rows, args.workers, args.batch)),
        ):
            with PeakMemory() as memory:
                result = run()
            result["peak_rss_mb"] = memory.peak / 2**20
            report[name] = result
            print(
                f"  {name:<15} {result['rows_per_s']:8.0f} rows/s   first batch {result['first_batch_s']:6.2f} s   "
                f"peak RSS (process tree) {result['peak_rss_mb']:7.0f} MB",
                flush=True,
            )
    report["ratio"] = report["ray_data"]["rows_per_s"] / report["dataloader"]["rows_per_s"]
    print(
        f"  ratio Ray Data / DataLoader: {report['ratio']:.2f}x "
        f"(Ray wall time with cluster and trainer start-up: {report['ray_data']['wall_s_with_startup']:.1f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    return 0
