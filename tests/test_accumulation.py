"""Gradient accumulation is invariant: 1 worker x accumulation 2 == 2 workers (FSDP2) x accumulation 1.

The train function and its helpers are defined inside the test: Ray pickles them by value.
"""

from __future__ import annotations

import json

import torch


def _run(tmp_path, workers: int, accum: int) -> dict[str, torch.Tensor]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from btp.config import ExperimentConfig, ModelConfig

    cfg = ExperimentConfig()
    cfg.data.task = "vqa"
    answers = tmp_path / "answers.json"
    answers.write_text(json.dumps([f"answer{i}" for i in range(8)]))  # 8 labels
    cfg.data.vqa_answers = str(answers)
    no_dropout = {"dropout": 0.0, "attention_dropout": 0.0}
    cfg.model = ModelConfig(config={**no_dropout, "text": no_dropout})
    cfg.train.num_workers, cfg.train.grad_accum, cfg.train.lr, cfg.train.warmup = workers, accum, 2e-4, 1
    out = tmp_path / f"w{workers}a{accum}"
    out.mkdir()

    def loop(config):
        import ray.train
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        from btp.train.loop import Trainer

        def _batches(step: int, size: int = 4, labels: int = 8) -> list[dict[str, torch.Tensor]]:
            """The two micro-batches of `step` (deterministic, the same in both layouts)."""
            out = []
            for part in range(2):
                g = torch.Generator().manual_seed(1000 * step + part)
                ids = torch.randint(5, 1000, (size, 10), generator=g)
                ids[:, 0] = 0
                targets = torch.zeros(size, labels)
                targets[torch.arange(size), torch.randint(0, labels, (size,), generator=g)] = 1.0
                out.append(
                    {
                        "input_ids": ids,
                        "attention_mask": torch.ones_like(ids),
                        "pixel_values": torch.randint(
                            0, 256, (size, 3, 64, 64), generator=g, dtype=torch.uint8
                        ),
                        "labels": targets,
                    }
                )
            return out

        trainer = Trainer(config["cfg"], config["out"], total_steps=3)
        rank, world = trainer.rank, trainer.world
        for step in range(3):
            micro = _batches(step)
            # 2 workers: one micro-batch each; 1 worker: both, accumulated
            trainer.train_step(micro[rank::world])
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = (
            get_model_state_dict(trainer.model, options=opts)
            if dist.is_initialized() and world > 1
            else (trainer.model.state_dict())
        )
        if ray.train.get_context().get_world_rank() == 0:
            torch.save(state, f"{config['out']}/state.pt")

    TorchTrainer(
        loop,
        train_loop_config={"cfg": cfg, "out": str(out)},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 0.5}),
        run_config=RunConfig(name=out.name, storage_path=str(tmp_path / "ray")),
    ).fit()
    return torch.load(out / "state.pt", weights_only=True)


def test_one_worker_accumulating_equals_two_workers(local_ray, tmp_path):
    accumulated = _run(tmp_path, workers=1, accum=2)
    sharded = _run(tmp_path, workers=2, accum=1)
    assert accumulated.keys() == sharded.keys()
    from bridgetower import BridgeTowerConfig, BridgeTowerForVQA

    torch.manual_seed(0)
    start = BridgeTowerForVQA(BridgeTowerConfig.preset("tiny", vqa_num_labels=8)).state_dict()
    moved = max(float((accumulated[k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-4  # three optimizer steps changed the weights: the comparison below has teeth
    worst = max(float((accumulated[k] - sharded[k]).abs().max()) for k in accumulated)
    assert worst < 1e-5, worst
