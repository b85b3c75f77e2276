"""Checkpoint formats: ours, transformers', the official `.ckpt`, and CLIP / RoBERTa towers.

Everything is read into one canonical layout: backbone keys under `bridgetower.` (transformers' names), head keys
at the top level (official and transformers' names agree there). Reference §7 and §9 give the mapping.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bridgetower.config import BridgeTowerConfig, TextConfig, VisionConfig

PREFIX = "bridgetower."
BACKBONE_ROOTS = ("vision_model.", "text_model.", "cross_modal_", "token_type_embeddings.")
# heads of any task: ignored when the target model has no such head
HEAD_ROOTS = (
    "mlm_score.",
    "itm_score.",
    "itc_text_head.",
    "itc_image_head.",
    "itc_cross_modal_head.",
    "vqa_classifier.",
    "nlvr2_classifier.",
    "snli_classifier.",
    "rank_output.",
    "classifier.",
)
HEAD_SCALARS = ("temperature", "logit_scale")
TRANSFORMERS_VARIANTS = ("add", "scaled_add", "interpolate")
TRANSFORMERS_CLASSES = {
    "BridgeTowerForPretraining": "BridgeTowerForMaskedLM",
    "BridgeTowerForRetrieval": "BridgeTowerForImageAndTextRetrieval",
}


class CheckpointFormatError(ValueError):
    """The source is not a checkpoint we can read."""


# ---- layouts ---------------------------------------------------------------------------------------------------
def to_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Backbone keys get the `bridgetower.` prefix (a bare transformers BridgeTowerModel has none)."""
    return {(PREFIX + k if k.startswith(BACKBONE_ROOTS) else k): v for k, v in state.items()}


def to_model_layout(
    state: dict[str, torch.Tensor], base_prefix: str, tower: str | None
) -> dict[str, torch.Tensor]:
    """Canonical -> the keys of a model whose backbone sits at `base_prefix` (or a single `tower`)."""
    state = to_canonical(state)
    if base_prefix == "bridgetower":
        return state
    out = {}
    for key, value in state.items():
        if key.startswith(PREFIX):
            key = key[len(PREFIX) :]
            if tower and not key.startswith(tower + "."):
                continue  # the other tower and the cross-modal encoder are not part of a uni-modal model
        out[key] = value
    return out


def is_ignorable(key: str) -> bool:
    """Keys a model may skip: other tasks' heads and non-persistent buffers."""
    return key.startswith(HEAD_ROOTS) or key in HEAD_SCALARS or key.endswith("position_ids")


# ---- reading ---------------------------------------------------------------------------------------------------
def read_checkpoint(src: str | Path) -> tuple[BridgeTowerConfig, dict[str, torch.Tensor]]:
    """(config, canonical state dict) from a directory, hub id or official `.ckpt` file."""
    path = Path(src)
    if path.is_file() and path.suffix in (".json", ".safetensors", ".bin"):
        path = path.parent  # a file inside a checkpoint directory: read the directory
    elif path.is_file():
        return read_official(path)
    if not path.exists():
        path = _download(str(src))
    if not (path / "config.json").is_file() and (path / "model" / "config.json").is_file():
        path = path / "model"  # a run folder of `btp train`: its final model
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointFormatError(f"{path} has no config.json: not a BridgeTower checkpoint directory")
    raw = json.loads(config_file.read_text())
    if "bridgetower_platform" in raw:
        config = BridgeTowerConfig.from_dict(raw["bridgetower_platform"]["config"])
    elif raw.get("model_type") == "bridgetower":
        config = config_from_transformers(raw)
    else:
        raise CheckpointFormatError(
            f"{config_file}: model_type {raw.get('model_type')!r} is not a BridgeTower config "
            "(for CLIP + RoBERTa towers use from_towers)"
        )
    return config, to_canonical(read_weights(path))


def read_weights(directory: Path) -> dict[str, torch.Tensor]:
    """safetensors (single or sharded), else `pytorch_model.bin` loaded with `weights_only=True`."""
    from safetensors.torch import load_file

    index = directory / "model.safetensors.index.json"
    if (directory / "model.safetensors").is_file():
        return load_file(str(directory / "model.safetensors"))
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {k: v for f in files for k, v in load_file(str(directory / f)).items()}
    if (directory / "pytorch_model.bin").is_file():
        return _torch_load(directory / "pytorch_model.bin")
    raise CheckpointFormatError(f"{directory} has no model.safetensors or pytorch_model.bin")


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling refusal is the safety check doing its job
        raise CheckpointFormatError(
            f"{path}: cannot be read with weights_only=True ({type(err).__name__}: {str(err).splitlines()[0]}); "
            "loading arbitrary pickles would execute code. Re-save it as a plain state dict or safetensors."
        ) from None


def _not_found(src: str) -> str | None:
    """Why `src`, which is not here, cannot be a hub id either (None: it may be one).

    `runs/NAME` has the form org/name of a hub id; when its first part is a folder here, it names a local path
    that is missing, and asking the hub would only retry the network before failing.
    """
    if src.count("/") != 1 or src.startswith(("/", ".", "~")):
        return f"{src}: no such file or directory, and not a hub id of the form org/name"
    first = src.split("/")[0]
    if Path(first).is_dir():
        return f"{src}: no such file or directory (the folder {first}/ is here: a local path, not a hub id)"
    return None


def _download(repo_id: str) -> Path:
    problem = _not_found(repo_id)
    if problem:
        raise CheckpointFormatError(problem)
    from huggingface_hub import snapshot_download

    patterns = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model.bin"]
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:
        raise CheckpointFormatError(f"could not fetch {repo_id} from the hub: {err}") from None


# ---- transformers ------------------------------------------------------------------------------------------------
def config_from_transformers(raw: dict[str, Any]) -> BridgeTowerConfig:
    """transformers' BridgeTowerConfig dict -> ours (its cross-modal layers are sized by `text_config`)."""
    if not raw.get("share_cross_modal_transformer_layers", True):
        raise CheckpointFormatError(
            "share_cross_modal_transformer_layers=False checkpoints are not supported"
        )
    t, v = raw.get("text_config") or {}, raw.get("vision_config") or {}
    text = TextConfig(
        vocab_size=t.get("vocab_size", 50265),
        hidden_size=t.get("hidden_size", 768),
        num_layers=t.get("num_hidden_layers", 12),
        num_heads=t.get("num_attention_heads", 12),
        intermediate_size=t.get("intermediate_size", 3072),
        max_position_embeddings=t.get("max_position_embeddings", 514),
        type_vocab_size=t.get("type_vocab_size", 1),
        layer_norm_eps=t.get("layer_norm_eps", 1e-5),
        dropout=t.get("hidden_dropout_prob", 0.1),
        attention_dropout=t.get("attention_probs_dropout_prob", 0.1),
        pad_token_id=t.get("pad_token_id", 1),
        bos_token_id=t.get("bos_token_id", 0),
        eos_token_id=t.get("eos_token_id", 2),
    )
    vision = VisionConfig(
        hidden_size=v.get("hidden_size", 768),
        num_layers=v.get("num_hidden_layers", 12),
        patch_size=v.get("patch_size", 16),
        image_size=v.get("image_size", 288),
        num_channels=v.get("num_channels", 3),
        layer_norm_eps=v.get("layer_norm_eps", 1e-5),
    )
    eps = raw.get("layer_norm_eps", 1e-5)
    return BridgeTowerConfig(
        vision=vision,
        text=text,
        hidden_size=raw.get("hidden_size", 768),
        num_layers=raw.get("num_hidden_layers", 6),
        num_heads=text.num_heads,
        intermediate_size=text.intermediate_size,
        dropout=text.dropout,
        attention_dropout=text.attention_dropout,
        bridge=raw.get("link_tower_type", "add"),
        layer_norm_eps=eps,
        cross_layer_norm_eps=text.layer_norm_eps,
        mlm_layer_norm_eps=eps,
        contrastive_hidden_size=raw.get("contrastive_hidden_size", 256),
    )


def transformers_compatible(cfg: BridgeTowerConfig) -> list[str]:
    """Reasons transformers' BridgeTowerModel cannot express this config (empty: it can)."""
    reasons = []
    if cfg.bridge not in TRANSFORMERS_VARIANTS:
        reasons.append(f"bridge {cfg.bridge!r}")
    if (cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) != (
        cfg.text.hidden_size,
        cfg.text.num_heads,
        cfg.text.intermediate_size,
    ):
        reasons.append("cross-modal sizes differ from the text tower's")
    if cfg.vision.heads != max(1, cfg.vision.hidden_size // 64):
        reasons.append("vision heads != width // 64")
    if cfg.vision.num_layers != cfg.text.num_layers:
        reasons.append("towers of different depth")
    if cfg.vision_bridge_layers is not None or cfg.text_bridge_layers is not None:
        reasons.append("custom bridge layers")
    if cfg.num_token_types != 2:
        reasons.append("three token types")
    return reasons


def to_transformers_config(cfg: BridgeTowerConfig, class_name: str) -> dict[str, Any]:
    """Our config.json: our full config, plus transformers' keys when transformers can load the weights."""
    out: dict[str, Any] = {
        "bridgetower_platform": {"format_version": 1, "class": class_name, "config": cfg.to_dict()}
    }
    reasons = transformers_compatible(cfg)
    if class_name in ("BridgeTowerForImageClassification", "BridgeTowerForTextClassification"):
        reasons.append("uni-modal model")
    if reasons:
        out["transformers_incompatible"] = reasons
        return out
    t, v = cfg.text, cfg.vision
    out.update(
        model_type="bridgetower",
        architectures=[TRANSFORMERS_CLASSES.get(class_name, "BridgeTowerModel")],
        hidden_size=cfg.hidden_size,
        num_attention_heads=cfg.num_heads,
        num_hidden_layers=cfg.num_layers,
        hidden_act="gelu",
        layer_norm_eps=cfg.layer_norm_eps,
        link_tower_type=cfg.bridge,
        share_cross_modal_transformer_layers=True,
        share_link_tower_layers=False,
        tie_word_embeddings=False,
        initializer_factor=1,
        contrastive_hidden_size=cfg.contrastive_hidden_size,
        text_config={
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "num_hidden_layers": t.num_layers,
            "num_attention_heads": t.num_heads,
            "intermediate_size": t.intermediate_size,
            "max_position_embeddings": t.max_position_embeddings,
            "type_vocab_size": t.type_vocab_size,
            # transformers shares this eps between the text tower and the cross-modal layers
            "layer_norm_eps": t.layer_norm_eps,
            "hidden_dropout_prob": t.dropout,
            "attention_probs_dropout_prob": t.attention_dropout,
            "hidden_act": "gelu",
            "pad_token_id": t.pad_token_id,
            "bos_token_id": t.bos_token_id,
            "eos_token_id": t.eos_token_id,
        },
        vision_config={
            "hidden_size": v.hidden_size,
            "num_hidden_layers": v.num_layers,
            "patch_size": v.patch_size,
            "image_size": v.image_size,
            "num_channels": v.num_channels,
            "layer_norm_eps": v.layer_norm_eps,
        },
    )
    return out


# ---- official .ckpt ----------------------------------------------------------------------------------------------
_VISUAL_RENAMES = {
    "conv1.weight": "embeddings.patch_embedding.weight",
    "class_embedding": "embeddings.class_embedding",
    "positional_embedding": "embeddings.position_embedding.weight",
}
_OFFICIAL_DROPPED = ("vit_model.positional_embedding", "vit_model.ln_final.", "vit_model.token_embedding.")


def official_to_canonical(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official key names -> canonical (reference §7); CLIP text leftovers and position_ids are dropped."""
    out = {}
    for key, value in state.items():
        if key.startswith(_OFFICIAL_DROPPED) or key.endswith("position_ids"):
            continue
        if key.startswith("vit_model.visual."):
            rest = key[len("vit_model.visual.") :]
            out[PREFIX + "vision_model.visual." + _VISUAL_RENAMES.get(rest, rest)] = value
        elif key.startswith("text_transformer."):
            out[PREFIX + "text_model." + key[len("text_transformer.") :]] = value
        elif key.startswith(("cross_modal_", "token_type_embeddings.")):
            out[PREFIX + key] = value
        else:
            out[key] = value
    return out


def canonical_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Canonical -> official key names (for exporting to the official code)."""
    back = {v: k for k, v in _VISUAL_RENAMES.items()}
    out = {}
    for key, value in to_canonical(state).items():
        if key.startswith(PREFIX + "vision_model.visual."):
            rest = key[len(PREFIX + "vision_model.visual.") :]
            out["vit_model.visual." + back.get(rest, rest)] = value
        elif key.startswith(PREFIX + "text_model."):
            out["text_transformer." + key[len(PREFIX + "text_model.") :]] = value
        elif key.startswith(PREFIX):
            out[key[len(PREFIX) :]] = value
        else:
            out[key] = value
    return out


def read_official(path: Path) -> tuple[BridgeTowerConfig, dict[str, torch.Tensor]]:
    """An official (PyTorch Lightning) `.ckpt`: sizes are read from the tensors, not the saved hyper-parameters."""
    blob = _torch_load(path)
    if not isinstance(blob, dict):
        raise CheckpointFormatError(f"{path}: expected a checkpoint dict, found {type(blob).__name__}")
    state = blob.get("state_dict", blob)
    hparams = (blob.get("hyper_parameters") or {}).get("config") or {}
    if not any(k.startswith("vit_model.visual.") for k in state):
        raise CheckpointFormatError(
            f"{path}: no vit_model.visual.* keys; not an official BridgeTower checkpoint"
        )
    state = official_to_canonical(state)
    return config_from_official(state, hparams), state


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def config_from_official(state: dict[str, torch.Tensor], hparams: dict[str, Any]) -> BridgeTowerConfig:
    """Sizes from the weights; the official eps (1e-12 in cross-modal layers and the MLM head, 1e-5 elsewhere)."""
    vis = PREFIX + "vision_model.visual."
    txt = PREFIX + "text_model."
    conv = state[vis + "embeddings.patch_embedding.weight"]
    grid = int(round((state[vis + "embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5))
    words = state[txt + "embeddings.word_embeddings.weight"]
    cross = state[PREFIX + "cross_modal_text_transform.weight"].shape[0]
    cross_layers = _count(state, PREFIX + "cross_modal_text_layers.")
    ffn = state[PREFIX + "cross_modal_text_layers.0.intermediate.dense.weight"].shape[0]
    vision = VisionConfig(
        hidden_size=conv.shape[0],
        num_layers=_count(state, vis + "transformer.resblocks."),
        patch_size=conv.shape[-1],
        image_size=grid * conv.shape[-1],
    )
    text = TextConfig(
        vocab_size=words.shape[0],
        hidden_size=words.shape[1],
        num_layers=_count(state, txt + "encoder.layer."),
        num_heads=max(1, words.shape[1] // 64),
        intermediate_size=state[txt + "encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state[txt + "embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state[txt + "embeddings.token_type_embeddings.weight"].shape[0],
    )
    extra: dict[str, Any] = {}
    if "vqa_classifier.3.weight" in state:
        extra["vqa_num_labels"] = state["vqa_classifier.3.weight"].shape[0]
    if "itc_text_head.weight" in state:
        extra["contrastive_hidden_size"] = state["itc_text_head.weight"].shape[0]
    return BridgeTowerConfig(
        vision=vision,
        text=text,
        hidden_size=cross,
        num_layers=cross_layers,
        num_heads=int(hparams.get("num_heads") or max(1, cross // 64)),
        intermediate_size=ffn,
        num_token_types=state[PREFIX + "token_type_embeddings.weight"].shape[0],
        bridge="add"
        if any(".cross_modal_text_link_tower." in k for k in state) or cross_layers == 1
        else "none",
        layer_norm_eps=1e-5,
        cross_layer_norm_eps=1e-12,
        mlm_layer_norm_eps=1e-12,
        **extra,
    )


# ---- CLIP and RoBERTa towers -------------------------------------------------------------------------------------
def read_tower(src: str | Path, kind: str) -> tuple[VisionConfig | TextConfig, dict[str, torch.Tensor]]:
    """One tower ("vision" or "text"): its config and `vision_model.*` / `text_model.*` weights.

    From a BridgeTower checkpoint directory (ours, or a run of ours: its `model/`; or transformers') the tower is
    cut out of the whole model; anything else is read as a transformers CLIPVisionModel / RobertaModel.
    """
    path = Path(src)
    if (path / "model" / "config.json").is_file():  # a run of ours: its final weights
        path = path / "model"
    if (path / "config.json").is_file() and _is_bridgetower(path / "config.json"):
        config, state = read_checkpoint(path)
        root = f"{PREFIX}{kind}_model."
        tower = {k[len(PREFIX) :]: v for k, v in state.items() if k.startswith(root)}
        if not tower:
            raise CheckpointFormatError(f"{src}: this BridgeTower checkpoint holds no {kind} tower weights")
        return (config.vision if kind == "vision" else config.text), tower
    problem = None if path.exists() else _not_found(str(src))
    if problem:
        raise CheckpointFormatError(problem)
    try:
        return read_clip_vision(src) if kind == "vision" else read_roberta(src)
    except OSError as err:  # transformers: not a model folder, or the hub could not provide it
        lines = str(err).strip().splitlines()
        raise CheckpointFormatError(
            f"{src}: cannot read a {kind} tower: {lines[0] if lines else err}"
        ) from None


def _is_bridgetower(config_file: Path) -> bool:
    try:
        raw = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(raw, dict) and ("bridgetower_platform" in raw or raw.get("model_type") == "bridgetower")


def read_clip_vision(src: str | Path) -> tuple[VisionConfig, dict[str, torch.Tensor]]:
    """A transformers CLIPVisionModel (dir or hub id) -> our vision config and `vision_model.visual.*` weights."""
    from transformers import CLIPVisionModel

    model = CLIPVisionModel.from_pretrained(str(src))
    c = model.config
    if c.hidden_act != "quick_gelu":
        raise CheckpointFormatError(
            f"{src}: CLIP hidden_act {c.hidden_act!r}; the BridgeTower tower uses quick_gelu"
        )
    if c.intermediate_size != 4 * c.hidden_size:
        raise CheckpointFormatError(f"{src}: CLIP MLP width {c.intermediate_size} is not 4 x {c.hidden_size}")
    cfg = VisionConfig(
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        patch_size=c.patch_size,
        image_size=c.image_size,
        num_channels=c.num_channels,
        layer_norm_eps=c.layer_norm_eps,
    )
    sd = {k.removeprefix("vision_model."): v for k, v in model.state_dict().items()}
    out = {
        "embeddings.class_embedding": sd["embeddings.class_embedding"],
        "embeddings.patch_embedding.weight": sd["embeddings.patch_embedding.weight"],
        "embeddings.position_embedding.weight": sd["embeddings.position_embedding.weight"],
        "ln_pre.weight": sd["pre_layrnorm.weight"],
        "ln_pre.bias": sd["pre_layrnorm.bias"],
        "ln_post.weight": sd["post_layernorm.weight"],
        "ln_post.bias": sd["post_layernorm.bias"],
    }
    for i in range(c.num_hidden_layers):
        src_l, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for part in ("weight", "bias"):
            qkv = [sd[f"{src_l}self_attn.{p}_proj.{part}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{part}"] = torch.cat(qkv)
            out[f"{dst}attn.out_proj.{part}"] = sd[f"{src_l}self_attn.out_proj.{part}"]
            out[f"{dst}ln_1.{part}"] = sd[f"{src_l}layer_norm1.{part}"]
            out[f"{dst}ln_2.{part}"] = sd[f"{src_l}layer_norm2.{part}"]
            out[f"{dst}mlp.c_fc.{part}"] = sd[f"{src_l}mlp.fc1.{part}"]
            out[f"{dst}mlp.c_proj.{part}"] = sd[f"{src_l}mlp.fc2.{part}"]
    return cfg, {"vision_model.visual." + k: v.detach().clone() for k, v in out.items()}


def read_roberta(src: str | Path) -> tuple[TextConfig, dict[str, torch.Tensor]]:
    """A transformers RobertaModel (dir or hub id) -> our text config and `text_model.*` weights."""
    from transformers import RobertaModel

    model = RobertaModel.from_pretrained(str(src))
    c = model.config
    cfg = TextConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_layers=c.num_hidden_layers,
        num_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps,
        dropout=c.hidden_dropout_prob,
        attention_dropout=c.attention_probs_dropout_prob,
        pad_token_id=c.pad_token_id,
    )
    sd = {k.removeprefix("roberta."): v.detach().clone() for k, v in model.state_dict().items()}
    return cfg, {
        "text_model." + k: v for k, v in sd.items() if not k.endswith(("position_ids", "token_type_ids"))
    }
