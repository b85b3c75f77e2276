"""Shared fixtures: tiny random transformers BridgeTower checkpoints written to temp dirs (no network)."""

from __future__ import annotations

import contextlib
import os

import pytest
import torch

# Ray Train polls its workers every 2 s by default, and duplicates worker prints on the driver
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")

# The modules that take longest, longest first. With `--dist loadfile` (pyproject) xdist hands whole modules to its
# workers in collection order, so starting with these keeps both workers busy until the end. Only the order changes.
LONGEST_FIRST = (
    "test_train.py",
    "test_tune.py",
    "test_quickstart.py",
    "test_learn.py",
    "test_bench_tune.py",
    "test_bench_train.py",
    "test_jobs.py",
    "test_model.py",
    "test_accumulation.py",
    "test_bench_ingest.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within a module is kept


TINY_HF = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_hidden_layers=2,
    text_config=dict(
        vocab_size=120,
        hidden_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=40,
    ),
    vision_config=dict(hidden_size=128, num_hidden_layers=3, patch_size=8, image_size=32),
)


def perturb(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Move every weight away from its init (LayerNorms at 1/0 would hide wiring mistakes)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return model


def hf_model(cls_name: str, seed: int = 0, **overrides):
    import transformers

    torch.manual_seed(seed)
    config = transformers.BridgeTowerConfig(**{**TINY_HF, **overrides})
    model = getattr(transformers, cls_name)(config)
    return perturb(model, seed).eval()


def inputs(batch: int = 3, length: int = 12, image: int = 32, vocab: int = 120, seed: int = 0):
    """Random text with padding (RoBERTa pad id 1) and images."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (batch, length), generator=g)
    ids[:, 0] = 0
    mask = torch.ones(batch, length, dtype=torch.long)
    for i in range(1, batch):
        mask[i, length - 3 * i :] = 0
    ids[mask == 0] = 1
    pixels = torch.randn(batch, 3, image, image, generator=g)
    return ids, mask, pixels


@pytest.fixture
def hf_dir(tmp_path):
    """Save a tiny transformers model; returns (model, directory)."""

    def make(cls_name: str = "BridgeTowerModel", seed: int = 0, **overrides):
        model = hf_model(cls_name, seed, **overrides)
        path = tmp_path / cls_name
        model.save_pretrained(path)
        return model, path

    return make


@pytest.fixture(scope="module")
def local_ray():
    """A real local Ray for the module's tests (2 CPUs), started as `btp train` starts one, stopped afterwards."""
    import ray

    from btp.train.run import ray_session

    with ray_session(num_cpus=2, log_to_driver=False):
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield


@contextlib.contextmanager
def s3_server(bucket: str = "btp-test"):
    """A real S3 API on loopback (moto's server; the one fake: no cloud account here) with an empty bucket.

    Yields the bucket's URI; while it runs, AWS_ENDPOINT_URL and test credentials are in the environment, so
    pyarrow (in this process and in Ray processes started from it) talks to it as to S3.
    """
    import pyarrow.fs as pafs
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": endpoint,
                "AWS_EC2_METADATA_DISABLED": "true",
            }.items():
                patch.setenv(key, value)
            pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True).create_dir(bucket)
            yield f"s3://{bucket}"
    finally:
        server.stop()


@pytest.fixture
def s3_bucket():
    """An S3 server with an empty bucket for one test (see s3_server)."""
    with s3_server() as uri:
        yield uri
