"""Task models: one class per task, the same backbone, each returning loss and named logits (reference §3)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from bridgetower import metrics as M
from bridgetower.config import BridgeTowerConfig
from bridgetower.heads import ITMHead, MLMHead, TextClassificationHead, itc_loss, two_layer_head, vqa_loss
from bridgetower.model import BridgeTowerModel, BridgeTowerOutput
from bridgetower.pretrained import PretrainedMixin
from bridgetower.text import TextModel
from bridgetower.vision import VisionModel

Gather = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TaskOutput:
    """`loss` is the unweighted sum of `losses` (present when labels are given)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    itm_labels: torch.Tensor | None = None
    itc_logits: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)

    def total(self) -> TaskOutput:
        if self.losses:
            self.loss = sum(self.losses.values())
        return self


def itm_negative_index(batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Image index per text: a random half of the batch gets another image of the same batch."""
    index = torch.arange(batch_size)
    if batch_size < 2:
        return index
    chosen = torch.randperm(batch_size, generator=generator)[: batch_size // 2]
    other = torch.randint(0, batch_size - 1, (len(chosen),), generator=generator)
    index[chosen] = other + (other >= chosen).long()  # uniform over the other images
    return index


def _head_hidden(config: BridgeTowerConfig, default: float) -> int:
    return int(config.hidden_size * 2 * (config.head_hidden_scale or default))


class _TaskModel(PretrainedMixin, nn.Module):
    base_model_prefix = "bridgetower"
    head_prefixes: tuple[str, ...] = ()

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__()
        self.config = config
        self.bridgetower = BridgeTowerModel(config)

    def wrap_units(self) -> list[nn.Module]:
        return self.bridgetower.wrap_units()

    def _features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pixel_values: torch.Tensor
    ) -> BridgeTowerOutput:
        return self.bridgetower(input_ids, attention_mask, pixel_values)


class BridgeTowerForPretraining(_TaskModel):
    """MLM + ITM (+ optional ITC) in one step that runs the vision tower once."""

    head_prefixes = ("mlm_score", "itm_score", "itc_text_head", "itc_image_head", "temperature")

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__(config)
        self.mlm_score = MLMHead(config.hidden_size, config.text.vocab_size, config.mlm_layer_norm_eps)
        self.itm_score = ITMHead(2 * config.hidden_size)
        if config.itc:
            self.itc_text_head = nn.Linear(config.text.hidden_size, config.contrastive_hidden_size)
            self.itc_image_head = nn.Linear(config.vision.hidden_size, config.contrastive_hidden_size)
            self.temperature = nn.Parameter(torch.tensor(config.temperature))
        self.init_weights()

    def wrap_units(self) -> list[nn.Module]:
        return [*super().wrap_units(), self.mlm_score]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        mlm_input_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,
        itm_image_index: torch.Tensor | None = None,
        gather: Gather | None = None,
    ) -> TaskOutput:
        """With `mlm_labels`: losses mlm + itm (+ itc). Without: MLM and ITM logits of the given pairs."""
        bt = self.bridgetower
        image_levels = bt.encode_image(pixel_values)
        image = bt.project_image(image_levels)
        text_levels = bt.encode_text(input_ids, attention_mask)
        text = bt.project_text(text_levels)
        out = TaskOutput()
        if mlm_labels is None:  # inference: one pass over the true pairs gives both heads
            tf, vf = bt.fuse(text, image, attention_mask)
            out.mlm_logits = self.mlm_score(tf)
            out.itm_logits = self.itm_score(bt.cls_features(tf, vf))
            return out
        if mlm_input_ids is None:
            raise ValueError("mlm_labels needs mlm_input_ids (the masked text)")
        tf, _ = bt.fuse(bt.project_text(bt.encode_text(mlm_input_ids, attention_mask)), image, attention_mask)
        out.mlm_logits = self.mlm_score(tf)
        out.losses["mlm"] = F.cross_entropy(
            out.mlm_logits.flatten(0, 1).float(), mlm_labels.flatten(), ignore_index=-100
        )
        # ITM: the unmasked text with in-batch images (negatives share the vision pass)
        if itm_image_index is None:
            itm_image_index = itm_negative_index(input_ids.shape[0]).to(input_ids.device)
        tf, vf = bt.fuse(text, [v[itm_image_index] for v in image], attention_mask)
        out.itm_logits = self.itm_score(bt.cls_features(tf, vf))
        out.itm_labels = (
            itm_image_index == torch.arange(len(itm_image_index), device=input_ids.device)
        ).long()
        out.losses["itm"] = F.cross_entropy(out.itm_logits.float(), out.itm_labels)
        if self.config.itc:
            t, v = self.itc_features(text_levels[-1], image_levels[-1])
            out.losses["itc"], out.itc_logits = itc_loss(t, v, self.temperature, gather)
        return out.total()

    def itc_features(
        self, text_last: torch.Tensor, image_last: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised ITC features from token 0 of the last uni-modal levels (all-gather ready)."""
        t = F.normalize(self.itc_text_head(text_last[:, 0]), dim=-1)
        v = F.normalize(self.itc_image_head(image_last[:, 0]), dim=-1)
        return t, v

    def metrics(self, output: TaskOutput, mlm_labels: torch.Tensor) -> dict[str, float]:
        return {
            "mlm_accuracy": M.accuracy(output.mlm_logits, mlm_labels),
            "itm_accuracy": M.accuracy(output.itm_logits, output.itm_labels),
        }


class _ClsClassifier(_TaskModel):
    """A 2-layer head on the cls features of one image-text pair."""

    head_name: str  # state-dict name of the head, as the official checkpoints spell it
    loss_name: str

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels)

    def head_input(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pixel_values: torch.Tensor
    ) -> torch.Tensor:
        """What the head reads: the pair's cls features."""
        return self._features(input_ids, attention_mask, pixel_values).cls_features

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
    ) -> TaskOutput:
        features = self.head_input(input_ids, attention_mask, pixel_values)
        out = TaskOutput(logits=getattr(self, self.head_name)(features))
        if labels is not None:
            out.losses[self.loss_name] = self.loss(out.logits, labels)
        return out.total()

    def metrics(self, output: TaskOutput, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": M.accuracy(output.logits, labels)}


class BridgeTowerForVQA(_ClsClassifier):
    """Answer classification over the answer vocabulary; `labels` are soft targets [B, vqa_num_labels]."""

    head_name, loss_name = "vqa_classifier", "vqa"
    head_prefixes = ("vqa_classifier",)

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__(config)
        hidden = _head_hidden(config, 2.0)
        self.vqa_classifier = two_layer_head(2 * config.hidden_size, hidden, config.vqa_num_labels)
        self.init_weights()

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.config.vqa_loss == "ce":
            targets = labels.float() / labels.float().sum(1, keepdim=True).clamp_min(1e-6)
            return -(F.log_softmax(logits.float(), 1) * targets).sum(1).mean()
        if self.config.vqa_loss != "bce":
            raise ValueError(f"vqa_loss must be 'bce' or 'ce', not {self.config.vqa_loss!r}")
        return vqa_loss(logits.float(), labels)  # soft-target BCE x label count

    def metrics(self, output: TaskOutput, labels: torch.Tensor) -> dict[str, float]:
        return {"vqa_score": float(M.vqa_score(output.logits, labels))}


class BridgeTowerForNLVR2(_ClsClassifier):
    """Two images per statement (token types 1 and 2); concatenated cls features -> True/False.

    `pixel_values` is [B, 2, 3, H, W].
    """

    head_name, loss_name = "nlvr2_classifier", "nlvr2"
    head_prefixes = ("nlvr2_classifier",)

    def __init__(self, config: BridgeTowerConfig) -> None:
        config = config.replace(num_token_types=max(3, config.num_token_types))
        super().__init__(config)
        self.nlvr2_classifier_dropout = nn.Dropout(config.dropout)
        self.nlvr2_classifier = two_layer_head(4 * config.hidden_size, _head_hidden(config, 1.5), 2)
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        types = self.bridgetower.token_type_embeddings.weight
        with torch.no_grad():  # the official code starts row 2 (second image) as a copy of row 1
            types[2] = types[1]

    def head_input(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, pixel_values: torch.Tensor
    ) -> torch.Tensor:
        """[cls(text, image 0); cls(text, image 1)], computed as one batch of 2B pairs."""
        bt = self.bridgetower
        b = input_ids.shape[0]
        levels = bt.encode_image(pixel_values.flatten(0, 1))  # both images in one vision pass
        pairs = [torch.cat([x[0::2], x[1::2]]) for x in levels]
        types = torch.cat([torch.ones(b, dtype=torch.long), torch.full((b,), 2)]).to(input_ids.device)
        text = [torch.cat([t, t]) for t in bt.encode_text(input_ids, attention_mask)]
        mask = None if attention_mask is None else torch.cat([attention_mask, attention_mask])
        tf, vf = bt.fuse(bt.project_text(text), bt.project_image(pairs, types), mask)
        cls = bt.cls_features(tf, vf)
        return self.nlvr2_classifier_dropout(torch.cat([cls[:b], cls[b:]], dim=-1))


class BridgeTowerForSNLIVE(_ClsClassifier):
    """Visual entailment: contradiction 0, neutral 1, entailment 2; the text is the hypothesis."""

    head_name, loss_name = "snli_classifier", "snli"
    head_prefixes = ("snli_classifier",)

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__(config)
        self.snli_classifier = two_layer_head(2 * config.hidden_size, _head_hidden(config, 2.0), 3)
        self.init_weights()


class BridgeTowerForRetrieval(_TaskModel):
    """Image-text retrieval: `retrieval_loss="itm"` (rank_output over false texts, ITM head frozen) or
    `"itm_itc"` (ITC + ITM with in-batch hard negatives; evaluation re-ranks the ITC top-k by ITM)."""

    head_prefixes = ("itm_score", "rank_output", "itc_text_head", "itc_image_head", "temperature")

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__(config)
        self.itm_score = ITMHead(2 * config.hidden_size)
        if config.retrieval_loss == "itm":
            self.rank_output = nn.Linear(2 * config.hidden_size, 1)
            self.itm_score.requires_grad_(False)
        else:
            self.itc_text_head = nn.Linear(config.text.hidden_size, config.contrastive_hidden_size)
            self.itc_image_head = nn.Linear(config.vision.hidden_size, config.contrastive_hidden_size)
            self.temperature = nn.Parameter(torch.tensor(config.temperature))
        self.init_weights()

    def init_weights(self) -> None:
        super().init_weights()
        self.init_rank_output()

    def init_rank_output(self) -> None:
        """rank_output starts as a copy (not an alias) of the ITM 'match' row."""
        if hasattr(self, "rank_output"):
            with torch.no_grad():
                self.rank_output.weight.copy_(self.itm_score.fc.weight[1:])
                self.rank_output.bias.copy_(self.itm_score.fc.bias[1:])

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        false_input_ids: torch.Tensor | None = None,
        false_attention_mask: torch.Tensor | None = None,
        image_ids: torch.Tensor | None = None,
        return_loss: bool = False,
        gather: Gather | None = None,
    ) -> TaskOutput:
        """Scores of the given pairs (`logits`); with `return_loss`, the training loss of the chosen recipe.

        itm: `false_input_ids` [B, K, T] are K false captions per image (CE over 1 + K scores, target 0),
        plus ITM with in-batch false images. itm_itc: `image_ids` [B] marks captions of the same image.
        """
        bt = self.bridgetower
        image_levels = bt.encode_image(pixel_values)
        image = bt.project_image(image_levels)
        text_levels = bt.encode_text(input_ids, attention_mask)
        text = bt.project_text(text_levels)
        tf, vf = bt.fuse(text, image, attention_mask)
        cls = bt.cls_features(tf, vf)
        out = TaskOutput(itm_logits=self.itm_score(cls))
        out.logits = self.rank_output(cls)[:, 0] if hasattr(self, "rank_output") else out.itm_logits[:, 1]
        if not return_loss:
            return out
        if self.config.retrieval_loss == "itm":
            self._itm_rank_losses(out, text, image, attention_mask, false_input_ids, false_attention_mask)
        else:
            self._itm_itc_losses(
                out, text, image, text_levels[-1], image_levels[-1], attention_mask, image_ids, gather
            )
        return out.total()

    def _itm_rank_losses(self, out, text, image, mask, false_ids, false_mask) -> None:
        bt = self.bridgetower
        if false_ids is None:
            raise ValueError("retrieval_loss='itm' needs false_input_ids [B, K, T] to train")
        b, k, _ = false_ids.shape
        false_text = bt.project_text(
            bt.encode_text(false_ids.flatten(0, 1), None if false_mask is None else false_mask.flatten(0, 1))
        )
        rep = [v.repeat_interleave(k, 0) for v in image]
        ftf, fvf = bt.fuse(false_text, rep, None if false_mask is None else false_mask.flatten(0, 1))
        false_scores = self.rank_output(bt.cls_features(ftf, fvf)).view(b, k)
        scores = torch.cat([out.logits[:, None], false_scores], dim=1)
        out.losses["irtr"] = F.cross_entropy(
            scores.float(), torch.zeros(b, dtype=torch.long, device=scores.device)
        )
        index = itm_negative_index(b).to(scores.device)
        tf, vf = bt.fuse(text, [v[index] for v in image], mask)
        out.itm_labels = (index == torch.arange(b, device=index.device)).long()
        out.losses["itm"] = F.cross_entropy(self.itm_score(bt.cls_features(tf, vf)).float(), out.itm_labels)

    def _itm_itc_losses(self, out, text, image, text_last, image_last, mask, image_ids, gather) -> None:
        bt = self.bridgetower
        b = text_last.shape[0]
        image_ids = torch.arange(b, device=text_last.device) if image_ids is None else image_ids
        t = F.normalize(self.itc_text_head(text_last[:, 0]), dim=-1)
        v = F.normalize(self.itc_image_head(image_last[:, 0]), dim=-1)
        all_ids = gather(image_ids) if gather else image_ids
        positives = (image_ids[:, None] == all_ids[None, :]).float()
        out.losses["itc"], out.itc_logits = itc_loss(t, v, self.temperature, gather, positives)
        # hard negatives sampled by ITC similarity from the whole batch (every worker's, with `gather`);
        # pairs of the same image excluded
        all_text = [gather(x) for x in text] if gather else text
        all_image = [gather(x) for x in image] if gather else image
        all_mask = None if mask is None else (gather(mask) if gather else mask)
        with torch.no_grad():
            all_t = gather(t) if gather else t
            all_v = gather(v) if gather else v
            same = image_ids[:, None] == all_ids[None, :]
            temperature = self.temperature.clamp(0.001, 0.5)
            w_t2i = F.softmax((t @ all_v.t() / temperature).float(), 1).masked_fill(same, 0) + 1e-9 * ~same
            w_i2t = F.softmax((v @ all_t.t() / temperature).float(), 1).masked_fill(same, 0) + 1e-9 * ~same
            neg_image = torch.multinomial(w_t2i, 1)[:, 0]
            neg_text = torch.multinomial(w_i2t, 1)[:, 0]
        texts = [torch.cat([x, x, a[neg_text]]) for x, a in zip(text, all_text)]
        images = [torch.cat([x, a[neg_image], x]) for x, a in zip(image, all_image)]
        m = None if mask is None else torch.cat([mask, mask, all_mask[neg_text]])
        tf, vf = bt.fuse(texts, images, m)
        logits = self.itm_score(bt.cls_features(tf, vf))
        out.itm_labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(logits.device)
        out.losses["itm"] = F.cross_entropy(logits.float(), out.itm_labels)

    @torch.no_grad()
    def score_matrix(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixel_values: torch.Tensor,
        k: int | None = None,
        batch_size: int = 64,
    ) -> torch.Tensor:
        """[texts, images] scores for evaluation; itm_itc re-ranks the ITC top-k of each text by ITM, the rest -100."""
        bt = self.bridgetower
        image_levels = [
            torch.cat(c) for c in zip(*(bt.encode_image(p) for p in pixel_values.split(batch_size)))
        ]
        n_text, n_image = input_ids.shape[0], pixel_values.shape[0]
        masks = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        scores = torch.full((n_text, n_image), -100.0, device=input_ids.device)
        image = bt.project_image(image_levels)
        if self.config.retrieval_loss == "itm_itc":
            v = F.normalize(self.itc_image_head(image_levels[-1][:, 0]), dim=-1)
            k = min(k or self.config.k_test, n_image)
        for ti in range(n_text):
            levels = bt.encode_text(input_ids[ti : ti + 1], masks[ti : ti + 1])
            if self.config.retrieval_loss == "itm_itc":
                t = F.normalize(self.itc_text_head(levels[-1][:, 0]), dim=-1)
                candidates = (t @ v.t())[0].topk(k).indices
            else:
                candidates = torch.arange(n_image, device=input_ids.device)
            text = bt.project_text(levels)
            for chunk in candidates.split(batch_size):
                tf, vf = bt.fuse(
                    [x.expand(len(chunk), -1, -1) for x in text],
                    [x[chunk] for x in image],
                    masks[ti : ti + 1].expand(len(chunk), -1),
                )
                cls = bt.cls_features(tf, vf)
                s = self.rank_output(cls)[:, 0] if hasattr(self, "rank_output") else self.itm_score(cls)[:, 1]
                scores[ti, chunk] = s.float()
        return scores

    def metrics(self, output: TaskOutput, labels: torch.Tensor | None = None) -> dict[str, float]:
        return (
            {"itm_accuracy": M.accuracy(output.itm_logits, output.itm_labels)}
            if output.itm_labels is not None
            else {}
        )


class BridgeTowerForImageClassification(PretrainedMixin, nn.Module):
    """Linear classifier on the CLIP tower's `ln_post` token 0 (CIFAR recipe)."""

    base_model_prefix = ""
    head_prefixes = ("classifier",)
    tower = "vision_model"

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__()
        if not config.num_labels:
            raise ValueError("BridgeTowerForImageClassification needs config.num_labels")
        self.config = config
        self.vision_model = VisionModel(config.vision)
        self.classifier = nn.Linear(config.vision.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None) -> TaskOutput:
        last = self.vision_model(
            pixel_values, [self.config.vision.num_layers - 1], self.config.gradient_checkpointing
        )
        out = TaskOutput(logits=self.classifier(last[-1][:, 0]))
        if labels is not None:
            out.losses["cls"] = F.cross_entropy(out.logits.float(), labels)
        return out.total()

    def wrap_units(self) -> list[nn.Module]:
        return list(self.vision_model.visual.transformer.resblocks)

    def metrics(self, output: TaskOutput, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": M.accuracy(output.logits, labels)}


class BridgeTowerForTextClassification(PretrainedMixin, nn.Module):
    """RoBERTa sequence classification on the text tower (GLUE recipe)."""

    base_model_prefix = ""
    head_prefixes = ("classifier",)
    tower = "text_model"

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__()
        if not config.num_labels:
            raise ValueError("BridgeTowerForTextClassification needs config.num_labels")
        self.config = config
        self.text_model = TextModel(config.text)
        self.classifier = TextClassificationHead(
            config.text.hidden_size, config.num_labels, config.text.dropout
        )
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> TaskOutput:
        from bridgetower.layers import additive_mask

        mask = additive_mask(attention_mask, self.classifier.dense.weight.dtype)
        last = self.text_model(
            input_ids, mask, [self.config.text.num_layers - 1], self.config.gradient_checkpointing
        )
        out = TaskOutput(logits=self.classifier(last[-1]))
        if labels is not None:
            out.losses["cls"] = F.cross_entropy(out.logits.float(), labels)
        return out.total()

    def wrap_units(self) -> list[nn.Module]:
        return list(self.text_model.encoder.layer)

    def metrics(self, output: TaskOutput, labels: torch.Tensor) -> dict[str, float]:
        return {"accuracy": M.accuracy(output.logits, labels)}


TASK_MODELS: dict[str, type[nn.Module]] = {
    "pretrain": BridgeTowerForPretraining,
    "vqa": BridgeTowerForVQA,
    "nlvr2": BridgeTowerForNLVR2,
    "snli_ve": BridgeTowerForSNLIVE,
    "irtr": BridgeTowerForRetrieval,
    "image_classification": BridgeTowerForImageClassification,
    "text_classification": BridgeTowerForTextClassification,
}
