"""`btp bench ingest` with a few hundred samples: real Ray Data into a real Ray Train worker, a real DataLoader."""

from __future__ import annotations

import json

import pytest

from btp.cli import main

METHODS = ("single_process", "dataloader", "ray_data", "dataloader_beside_ray")


@pytest.mark.slow
def test_tiny_ingest_bench_times_two_passes_of_every_method(tmp_path, capsys):
    out = tmp_path / "ingest.json"
    rows = 300
    assert main(["bench", "ingest", "--rows", str(rows), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for name in METHODS:
        r = report[name]
        # the warm pass saw every sample, and it was timed on its own, after the cold one
        assert r["rows"] >= rows and r["rows_per_s"] == pytest.approx(r["rows"] / r["warm_s"])
        assert 0 < r["first_batch_s"] <= r["cold_s"] and r["warm_s"] > 0
        assert r["total_s"] >= r["cold_s"] + r["warm_s"] and r["peak_rss_mb"] > 0
    ray_, loader = report["ray_data"], report["dataloader"]
    assert report["ratio"] == pytest.approx(ray_["rows_per_s"] / loader["rows_per_s"])
    assert report["ratio_cold"] == pytest.approx(loader["cold_s"] / ray_["cold_s"])
    # the DataLoader once more beside an idle local Ray: Ray Data's rate against it, and what Ray's presence cost
    beside = report["dataloader_beside_ray"]
    assert report["ratio_beside_ray"] == pytest.approx(ray_["rows_per_s"] / beside["rows_per_s"])
    assert report["ray_host_slowdown"] == pytest.approx(1 - beside["rows_per_s"] / loader["rows_per_s"])
    printed = capsys.readouterr().out
    assert "rows/s warm" in printed and f"{report['ratio']:.2f}x warm" in printed
    assert f"beside an idle local Ray: {report['ratio_beside_ray']:.2f}x warm" in printed


def test_the_dataloader_baseline_hands_over_every_sample_once_in_batches_of_the_consumers_size(tmp_path):
    """Like for like with Ray Data: two DataLoader workers run the same map function and the consumer receives
    batches of --batch samples, not whole preprocessed blocks."""
    import numpy as np
    import torch.utils.data

    from btp.bench.ingest import _Batches, _table
    from btp.data.pipeline import DataSpec, preprocess
    from btp.data.synth import write_synthetic

    write_synthetic(tmp_path, images=60, seed=4)
    paths = sorted(str(p) for p in tmp_path.glob("coco_caption_karpathy_*.arrow"))
    spec = DataSpec("pretrain", paths, str(tmp_path / "tokenizer"), image_size=32, map_batch_size=8)
    table = _table(paths, 30)
    loader = torch.utils.data.DataLoader(_Batches(table, spec, batch=16), batch_size=None, num_workers=2)
    batches = list(loader)
    sizes = [len(b["input_ids"]) for b in batches]
    assert max(sizes) == 16 and len(batches) > 2 * (30 // 8)  # blocks of 8 rows x ~5 captions, cut in 16s
    # the same samples as one pass of the map function over the whole table, none twice, none lost
    whole = preprocess(table, spec)
    got = np.concatenate([b["input_ids"].numpy() for b in batches])
    assert sorted(map(bytes, got)) == sorted(map(bytes, whole["input_ids"]))
