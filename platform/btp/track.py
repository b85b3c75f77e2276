"""Weights & Biases tracking of a training run (rank 0 only), and a reader for offline `.wandb` files.

The training loop makes one `Tracker` per run on rank 0 and a no-op one elsewhere:

    tracker = Tracker.start(cfg, run_dir) if rank == 0 else Tracker.off()
    tracker.log({"train/loss": 0.7, "lr": 1e-4}, step=10)
    tracker.finish({"steps": 100, "val/vqa_score": 0.61})

Runs are offline by default: no key, no network, everything under `RUN/wandb/offline-run-*/`, uploaded later with
`wandb sync`. They go online when `WANDB_API_KEY` is set (or `track.mode: online`); the `WANDB_MODE` environment
variable overrides both. `track.wandb: false` or mode `disabled` gives the no-op tracker.

wandb 0.31 ships no reader for offline runs: `read_offline_run` parses the `.wandb` file (LevelDB-log framing
around `wandb_internal_pb2.Record` protobufs) back into history rows, summary, config and run attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import re
import struct
import time
import zlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

MODES = ("offline", "online", "disabled")
# the run id chosen at the first start of a run directory; a later start (resume, restart) reuses it
ID_FILE = "btp_run_id"
_ENV_MODES = {
    "offline": "offline",
    "dryrun": "offline",
    "online": "online",
    "run": "online",
    "disabled": "disabled",
}


def resolve_mode(
    mode: str = "offline", enabled: bool = True, environ: Mapping[str, str] | None = None
) -> str:
    """The wandb mode a run gets: `WANDB_MODE` wins, then `track.mode` (disabled, online), then a key."""
    env = os.environ if environ is None else environ
    if not enabled:
        return "disabled"
    forced = env.get("WANDB_MODE", "").strip().lower()
    if forced:
        if forced not in _ENV_MODES:
            raise ValueError(f"WANDB_MODE={forced!r}: expected one of {', '.join(_ENV_MODES)}")
        return _ENV_MODES[forced]
    if mode not in MODES:
        raise ValueError(f"track.mode: {mode!r}: expected one of {', '.join(MODES)}")
    if mode in ("disabled", "online"):
        return mode
    return "online" if env.get("WANDB_API_KEY") else "offline"


def run_id(name: str, group: str | None = None) -> str:
    """A wandb run id derived from the run's name (and the study's group): same name, same id.

    Characters wandb does not allow in ids become `_`; when that (or a cut to 64 characters) changed the text, a
    short hash of the original keeps different names apart.
    """
    text = f"{group}-{name}" if group else name
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", text).strip(".") or "run"
    if safe == text and len(safe) <= 64:
        return safe
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    return f"{safe[:55]}-{digest}"


def _as_dict(cfg: Any) -> dict:
    """The resolved experiment as a nested dict (from the dataclass, an OmegaConf node or a dict)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if dataclasses.is_dataclass(cfg):
        return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)
    return json.loads(json.dumps(dict(cfg), default=str))


def _get(tree: Mapping, dotted: str, default: Any = None) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


class Tracker:
    """One wandb run of one training run; every method is a no-op when tracking is off."""

    def __init__(self, run: Any = None, mode: str = "disabled", run_dir: Path | None = None) -> None:
        self.run, self.mode, self.run_dir = run, mode, run_dir
        self._skipped = 0

    @classmethod
    def off(cls) -> Tracker:
        """A tracker that records nothing (ranks other than 0, or tracking disabled)."""
        return cls()

    @classmethod
    def start(cls, cfg: Any, run_dir: str | Path, *, resume: bool | None = None) -> Tracker:
        """Start (or resume) the wandb run of `cfg` (the resolved experiment) writing under `run_dir/wandb/`.

        resume: None continues the wandb run of an earlier start of this run directory if there was one (a
        `--resume` or a restart after a failure), True/False force it. Returns `Tracker.off()` when tracking is
        disabled.
        """
        exp = _as_dict(cfg)
        track = exp.get("track") or {}
        mode = resolve_mode(track.get("mode", "offline"), bool(track.get("wandb", True)))
        if mode == "disabled":
            return cls.off()
        run_dir = Path(run_dir)
        wandb_dir = run_dir / "wandb"
        id_file = wandb_dir / ID_FILE
        earlier = id_file.read_text().strip() if id_file.is_file() else ""
        resume = bool(earlier) if resume is None else resume
        name = _get(exp, "train.name") or run_dir.name
        group = track.get("group") or None
        rid = earlier if resume and earlier else run_id(name, group)
        task, bridge = _get(exp, "data.task"), _get(exp, "model.bridge")
        tags = [
            f"task:{task}" if task else None,
            f"bridge:{bridge}" if bridge else None,
            *track.get("tags", []),
        ]
        args = dict(
            project=track.get("project") or "bridgetower",
            entity=track.get("entity") or None,
            group=group,
            job_type=task,
            name=name,
            tags=list(dict.fromkeys(str(t)[:64] for t in tags if t)),
            config=exp,
            dir=str(run_dir),
        )
        wandb_dir.mkdir(parents=True, exist_ok=True)  # wandb only creates the last level
        run, mode = _init(args, rid, mode, resume)
        id_file.write_text(run.id + "\n")
        tracker = cls(run, mode, run_dir)
        if mode == "offline":
            where = Path(run.settings.sync_dir)
            print(
                f"wandb: offline run {run.id} in {where}; upload it with: wandb sync {where.parent}/offline-run-*",
                flush=True,
            )
        else:
            print(f"wandb: run {run.id} at {run.url}", flush=True)
        return tracker

    @property
    def enabled(self) -> bool:
        return self.run is not None

    @property
    def run_id(self) -> str | None:
        return self.run.id if self.run is not None else None

    @property
    def directory(self) -> Path | None:
        """The run's local wandb folder (`RUN/wandb/offline-run-*` offline)."""
        return Path(self.run.settings.sync_dir) if self.run is not None else None

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """One report at training step `step` (a second call with the same step adds to the same row)."""
        if self.run is None:
            return
        metrics = {k: v for k, v in metrics.items() if k != "step"}
        if step < self.run.step:
            # a resumed online run continues after its last step; rows it already has cannot be rewritten
            self._skipped += 1
            return
        self.run.log(metrics, step=int(step))

    def finish(self, summary: Mapping[str, Any] | None = None, *, exit_code: int = 0) -> None:
        """Write the final `summary` (e.g. summary.json's values) and close the run; exit_code != 0 marks it failed."""
        if self.run is None:
            return
        run, self.run = self.run, None
        if summary:
            run.summary.update(dict(summary))
        if self._skipped:
            print(
                f"wandb: {self._skipped} reports before the resumed run's last step were not logged",
                flush=True,
            )
        run.finish(exit_code=exit_code)
        if self.mode == "offline":
            _wait_for_exit(Path(run.settings.sync_file))

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.finish(exit_code=0 if kind is None else 1)


def _init(args: dict, rid: str, mode: str, resume: bool) -> tuple[Any, str]:
    """wandb.init without its console output; online problems fall back to offline rather than stop training."""
    import wandb

    def init(run_id: str, mode: str, resume: str | None) -> Any:
        settings = wandb.Settings(quiet=True, silent=True, console="off")
        return wandb.init(**args, id=run_id, mode=mode, resume=resume, reinit="create_new", settings=settings)

    def first_line(err: BaseException) -> str:
        return (str(err).strip().splitlines() or [type(err).__name__])[0]

    if mode == "offline":
        return init(rid, "offline", "allow" if resume else None), "offline"
    try:
        # a fresh run must not write into an older run of the same name: "never" refuses an existing id
        return init(rid, "online", "allow" if resume else "never"), "online"
    except Exception as err:  # wandb raises several kinds; tracking must not stop the training
        problem = first_line(err)
    if not resume:
        fresh = f"{rid[:48]}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            run = init(fresh, "online", "never")
            print(f"wandb: run id {rid} is not free ({problem}); this run is {fresh}", flush=True)
            return run, "online"
        except Exception as err:
            problem = first_line(err)
    print(f"wandb: the online run failed ({problem}); logging offline instead", flush=True)
    return init(rid, "offline", "allow" if resume else None), "offline"


# --- reading offline runs back ---------------------------------------------------------------------------------

_BLOCK = 32 * 1024
_HEADER = 7  # ":W&B", magic 0xBEE1, version 0
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def find_offline_runs(run_dir: str | Path) -> list[Path]:
    """The offline wandb runs of a run directory (`RUN/wandb/offline-run-*`), oldest first; not `latest-run`."""
    folder = Path(run_dir) / "wandb"
    parts = [p for p in folder.glob("offline-run-*") if p.is_dir() and not p.is_symlink()]
    # folder names carry the start time to the second only: order by the start time the run record holds
    return sorted(parts, key=lambda p: (_start_time(p), p.name))


def _wait_for_exit(file: Path, timeout: float = 10.0) -> None:
    """Wait until wandb has written the run's exit record: finish() can return before its writer flushed."""
    from wandb.proto import wandb_internal_pb2 as pb

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            size = file.stat().st_size
            start = max(0, (size // _BLOCK - 1) * _BLOCK)  # the last two blocks; chunks never cross a block
            with open(file, "rb") as f:
                f.seek(start)
                data = f.read()
            for payload in _payloads(data, offset=_HEADER if start == 0 else 0, header=start == 0):
                rec = pb.Record()
                rec.ParseFromString(payload)
                if rec.WhichOneof("record_type") == "exit":
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.05)


def _start_time(part: Path) -> float:
    from wandb.proto import wandb_internal_pb2 as pb

    for file in sorted(part.glob("run-*.wandb")):
        with open(file, "rb") as f:
            head = f.read(_BLOCK)  # the run record is among the first few
        try:
            for payload in _payloads(head):
                rec = pb.Record()
                rec.ParseFromString(payload)
                if rec.WhichOneof("record_type") == "run":
                    return rec.run.start_time.seconds + rec.run.start_time.nanos / 1e9
        except ValueError:
            pass
    return math.inf


def _payloads(data: bytes, offset: int = _HEADER, header: bool = True) -> Iterator[bytes]:
    """Records of a LevelDB-log file: 32 KiB blocks of <crc32, length, type> chunks; a torn tail is dropped.

    `data` starts at the file's start (header=True) or at a block boundary (then records begun earlier are
    skipped)."""
    if header and data[:4] != b":W&B":
        raise ValueError("not a wandb transaction log (no :W&B header)")
    pending: bytes | None = None
    while offset + 7 <= len(data):
        room = _BLOCK - offset % _BLOCK
        if room < 7:  # the rest of a block too small for a chunk header is padding
            offset += room
            continue
        crc, length, kind = struct.unpack("<IHB", data[offset : offset + 7])
        payload = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        if len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) & 0xFFFFFFFF != crc:
            break  # written up to a crash: keep what came before
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE and pending is not None:
            pending += payload
        elif kind == _LAST and pending is not None:
            yield pending + payload
            pending = None


def _value(text: str) -> Any:
    return json.loads(text)  # NaN and Infinity come back as floats


def _put(tree: dict, path: list[str], value: Any) -> None:
    for part in path[:-1]:
        node = tree.get(part)
        if not isinstance(node, dict):
            node = tree[part] = {}
        tree = node
    tree[path[-1]] = value


def _drop(tree: dict, path: list[str]) -> None:
    for part in path[:-1]:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(path[-1], None)


def _path(item: Any) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


_INTERNAL = ("_runtime", "_timestamp", "_wandb")


def _read_one(file: Path, internal: bool) -> dict:
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "exit_code": None}
    for payload in _payloads(file.read_bytes()):
        rec = pb.Record()
        rec.ParseFromString(payload)
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            row: dict[str, Any] = {}
            for item in rec.history.item:
                _put(row, _path(item), _value(item.value_json))
            out["history"].append(row)
        elif kind == "summary":
            for item in rec.summary.update:
                _put(out["summary"], _path(item), _value(item.value_json))
            for item in rec.summary.remove:
                _drop(out["summary"], _path(item))
        elif kind == "config":
            for item in rec.config.update:
                _put(out["config"], _path(item), _value(item.value_json))
            for item in rec.config.remove:
                _drop(out["config"], _path(item))
        elif kind == "run":
            r = rec.run
            out.update(
                id=r.run_id,
                name=r.display_name or r.run_id,
                project=r.project,
                entity=r.entity or None,
                group=r.run_group or None,
                job_type=r.job_type or None,
                tags=list(r.tags),
                resumed=bool(r.resumed),
                start_time=r.start_time.seconds + r.start_time.nanos / 1e9,
            )
            for item in r.config.update:
                _put(out["config"], _path(item), _value(item.value_json))
        elif kind == "exit":
            out["exit_code"] = rec.exit.exit_code
    if not internal:
        for row in out["history"]:
            for key in _INTERNAL:
                row.pop(key, None)
        for key in (*_INTERNAL, "_step"):
            out["summary"].pop(key, None)
        out["config"].pop("_wandb", None)
    return out


def read_offline_run(path: str | Path, *, internal: bool = False) -> dict:
    """An offline wandb run read back from its `.wandb` file.

    path: a `.wandb` file, an `offline-run-*` folder, or a run directory (`RUN/`, whose offline runs, one per start
    of a resumed run, are read oldest first and merged as `wandb sync` would upload them: later rows replace
    earlier rows of the same step, later summary and config values win).

    Returns a dict with: id, name, project, entity, group, job_type, tags, config (nested), history (rows with
    "_step", in step order), summary, exit_code (None when the run never finished), resumed, start_time and parts
    (the offline-run folders read). internal=True keeps wandb's own keys (_runtime, _timestamp, _wandb).
    """
    path = Path(path)
    if path.is_file():
        files = [path]
    elif path.name.startswith("offline-run-") or list(path.glob("run-*.wandb")):
        files = sorted(path.glob("run-*.wandb"))
    else:
        files = [f for part in find_offline_runs(path) for f in sorted(part.glob("run-*.wandb"))]
    if not files:
        raise FileNotFoundError(
            f"{path}: no offline wandb run (expected RUN/wandb/offline-run-*/run-*.wandb)"
        )
    merged: dict[str, Any] = {}
    rows: dict[Any, dict] = {}
    for file in files:
        one = _read_one(file, internal)
        for row in one.pop("history"):
            rows[row.get("_step", len(rows))] = row
        summary, config = merged.get("summary", {}), merged.get("config", {})
        resumed = merged.get("resumed", False)
        merged.update(one)
        merged["summary"] = {**summary, **one["summary"]}
        merged["config"] = {**config, **one["config"]}
        merged["resumed"] = resumed or one.get("resumed", False) or len(files) > 1
    merged["history"] = [rows[k] for k in sorted(rows, key=lambda s: (not isinstance(s, int), s))]
    merged["parts"] = sorted({str(f.parent) for f in files})
    merged.setdefault("id", None)
    return merged


__all__ = ["ID_FILE", "MODES", "Tracker", "find_offline_runs", "read_offline_run", "resolve_mode", "run_id"]
