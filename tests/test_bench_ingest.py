"""`btp bench ingest` with a few hundred samples: real Ray Data into a real Ray Train worker, a real DataLoader."""

from __future__ import annotations

import json

import pytest

from btp.cli import main

METHODS = ("single_process", "dataloader", "ray_data")


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
    printed = capsys.readouterr().out
    assert "rows/s warm" in printed and f"{report['ratio']:.2f}x warm" in printed
