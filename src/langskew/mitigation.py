"""Remedies for language-specific class skew, usable with any PyTorch or Hugging Face training loop.

Study A's fine-tuning runs these as conditions (``study_a.conditions`` in the config); the same
functions serve a script of your own (docs/mitigation.md has a worked example).

- :func:`per_language_class_weights`: w[l, c] = n_l / (C n_{l,c}) from a labels/languages table
  (the Study A weights, :mod:`langskew.weights`).
- Mask entropy maximisation (Jung & van der Plas 2024, Annex A.3): :func:`append_mask_row` adds
  one row of mask tokens shaped like a real row of the batch; :func:`mask_entropy_loss` is
  ``coef * mean(p log p)`` of the prediction on it, so minimising it pushes the output on
  uninformative input towards uniform.
- Language-adversarial training: :class:`LanguageAdversary`, a language-identification head on
  the sentence representation (the last layer's first token), trained either through a
  gradient-reversal layer (:func:`grad_reverse`, Ganin & Lempitsky 2015) or with the encoder
  maximising the entropy of the head's prediction.
- Per-language logit adjustment (Menon et al. 2021, applied per language): :func:`log_class_priors`
  and :func:`adjust_logits`; training uses ``logits + tau log p(y | language)``, prediction the plain logits.
- Group DRO over (language, label) groups (Sagawa et al. 2020): :class:`GroupDRO`.
- Per-language class-balanced resampling: :class:`PerLanguageBalancedSampler`.

:class:`MitigationLoss` combines them (with class weights) into one loss over a batch;
:class:`MitigationTrainer` plugs it into a Hugging Face ``Trainer``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from langskew.errors import LangskewError
from langskew.weights import SCHEMES, class_weights

ADVERSARY_KINDS = ("reversal", "entropy")
SAMPLINGS = ("shuffle", "per_language_balanced", "group_balanced", "per_language_subsample")
#: Keys of a Study A condition that configure a mitigation (besides ``train`` and ``weighting``).
CONDITION_KEYS = ("mask_entropy", "adversary", "logit_adjustment", "group_dro", "sampling")
#: The batch key holding each row's language index.
LANGUAGE_KEY = "language"


# -- settings --------------------------------------------------------------------------------
@dataclass(frozen=True)
class MitigationConfig:
    """Which mitigations a training run uses; the defaults switch every one off.

    mask_entropy: coefficient of the mask-row term (0: off; the authors used 1 and 2).
    adversary: "reversal" or "entropy" (None: off), with adversary_coef (authors: 0.1 and 0.01).
    logit_adjustment: tau of the per-language logit adjustment (0: off; Menon et al. use 1).
    group_dro: step size eta of the group weights (None: off), with group_dro_adjustment (Sagawa et
    al.'s generalisation adjustment C of C / sqrt(n_g); 0: off) and group_dro_weight_decay (the
    decoupled weight decay of the optimiser, AdamW-style, off biases and LayerNorm weights as in
    their code; Study A's fine-tuning applies it, a loop of your own gives it to its optimiser).
    sampling: "shuffle" (every row once per epoch), "per_language_balanced", "group_balanced"
    (every (language, label) group equally often: Sagawa et al.'s sampler for group DRO) or
    "per_language_subsample" (a fixed subset, each language's classes cut to its smallest class:
    SUBG within each language, :class:`langskew.baselines.PerLanguageSubsampleSampler`); None (the
    default) is "group_balanced" with group DRO, as published, else "shuffle".
    """

    mask_entropy: float = 0.0
    adversary: str | None = None
    adversary_coef: float = 0.0
    logit_adjustment: float = 0.0
    group_dro: float | None = None
    group_dro_adjustment: float = 0.0
    group_dro_weight_decay: float = 0.0
    sampling: str | None = None

    def __post_init__(self):
        if self.sampling is None:  # group DRO is published with group-balanced batches
            object.__setattr__(self, "sampling", "group_balanced" if self.group_dro is not None else "shuffle")
        self._check()

    def _check(self):
        for key in ("mask_entropy", "adversary_coef", "logit_adjustment", "group_dro_adjustment",
                    "group_dro_weight_decay"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise LangskewError(f"mitigation: {key} must be a finite number >= 0, got {value!r}")
        if self.adversary is not None and self.adversary not in ADVERSARY_KINDS:
            raise LangskewError(f"mitigation: adversary kind {self.adversary!r} unknown; "
                                f"expected one of {', '.join(ADVERSARY_KINDS)}")
        if self.adversary is not None and self.adversary_coef <= 0:
            raise LangskewError("mitigation: adversary coef must be > 0")
        if self.group_dro is not None and not (isinstance(self.group_dro, (int, float)) and self.group_dro > 0):
            raise LangskewError(f"mitigation: group_dro step size must be > 0, got {self.group_dro!r}")
        if self.group_dro is None and (self.group_dro_adjustment or self.group_dro_weight_decay):
            raise LangskewError("mitigation: group_dro_adjustment / group_dro_weight_decay are settings of group DRO, "
                                "which is off (group_dro=None)")
        if self.sampling not in SAMPLINGS:
            raise LangskewError(f"mitigation: sampling {self.sampling!r} unknown; expected one of {', '.join(SAMPLINGS)}")

    @classmethod
    def from_condition(cls, condition: Mapping[str, Any] | None) -> "MitigationConfig":
        """From a Study A condition's mitigation keys (see :data:`CONDITION_KEYS`), e.g.
        ``{"mask_entropy": 1}``, ``{"adversary": {"kind": "reversal", "coef": 0.1}}``,
        ``{"logit_adjustment": 1.0}``, ``{"group_dro": {"step_size": 0.01, "generalization_adjustment": 1,
        "weight_decay": 0.01}}``, ``{"sampling": "per_language_balanced"}``; ``train``, ``weighting`` and
        ``model_selection`` are ignored. A group DRO condition without ``sampling`` draws group-balanced
        batches, as the published algorithm does."""
        cond = {k: v for k, v in dict(condition or {}).items() if k not in ("train", "weighting", "model_selection")}
        unknown = sorted(set(cond) - set(CONDITION_KEYS))
        if unknown:
            raise LangskewError(f"condition: unknown key {unknown[0]!r}; mitigation keys: {', '.join(CONDITION_KEYS)}")
        adversary = cond.get("adversary") or {}
        dro = dict(cond.get("group_dro") or {})
        bad = sorted(set(dro) - {"step_size", "generalization_adjustment", "weight_decay"})
        if bad:
            raise LangskewError(f"condition: group_dro key {bad[0]!r} unknown; expected step_size, "
                                "generalization_adjustment, weight_decay")
        return cls(mask_entropy=float(cond.get("mask_entropy") or 0.0),
                   adversary=adversary.get("kind"), adversary_coef=float(adversary.get("coef") or 0.0),
                   logit_adjustment=float(cond.get("logit_adjustment") or 0.0),
                   group_dro=float(dro.get("step_size", math.nan)) if dro else None,
                   group_dro_adjustment=float(dro.get("generalization_adjustment") or 0.0),
                   group_dro_weight_decay=float(dro.get("weight_decay") or 0.0),
                   sampling=cond.get("sampling"))

    @property
    def changes_loss(self) -> bool:
        """Whether the loss differs from the (weighted) cross-entropy."""
        return bool(self.mask_entropy or self.adversary or self.logit_adjustment or self.group_dro)


# -- class weights ---------------------------------------------------------------------------
def per_language_class_weights(table: Any, n_classes: int | None = None, scheme: str = "per_language",
                               label_column: str = "label", language_column: str = "language") -> dict[str, np.ndarray]:
    """{language: class-weight vector} from a table with one row per training example (a
    DataFrame, a ``datasets.Dataset`` or a mapping of columns).

    ``scheme`` "per_language" gives w[l, c] = n_l / (C n_{l,c}) (scikit-learn's "balanced"
    weights per language), "global" n / (C n_c), "none" ones. Labels are 0..C-1; ``n_classes``
    defaults to the largest label + 1.
    """
    columns = list(table.column_names) if hasattr(table, "column_names") else list(table.columns)
    for col in (label_column, language_column):
        if col not in columns:
            raise LangskewError(f"per_language_class_weights: column {col!r} missing")
    labels = np.asarray(table[label_column], dtype=np.int64)
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    return class_weights(labels, np.asarray(table[language_column], dtype=object).astype(str), n_classes, scheme)


def weight_matrix(weights: Mapping[str, np.ndarray], languages: Sequence[str]) -> torch.Tensor:
    """The weights as a languages x classes tensor in ``languages`` order."""
    missing = [lang for lang in languages if lang not in weights]
    if missing:
        raise LangskewError(f"no class weights for language {missing[0]!r}")
    return torch.tensor(np.stack([np.asarray(weights[lang], dtype=np.float64) for lang in languages]),
                        dtype=torch.float32)


def language_indices(languages: Sequence[str], order: Sequence[str]) -> np.ndarray:
    """Each row's index in ``order``; a language outside it is an error naming it."""
    lookup = {lang: i for i, lang in enumerate(order)}
    unknown = sorted(set(map(str, languages)) - set(lookup))
    if unknown:
        raise LangskewError(f"language {unknown[0]!r} is not one of the training languages {list(order)}")
    return np.array([lookup[str(lang)] for lang in languages], dtype=np.int64)


# -- mask entropy maximisation -----------------------------------------------------------------
def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """mean(p log p) over every row and class of softmax(logits): -H / C averaged over rows."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return (logp.exp() * logp).mean()


def append_mask_row(batch: Mapping[str, torch.Tensor], mask_token_id: int,
                    pad_token_id: int) -> dict[str, torch.Tensor]:
    """The batch with one extra last row: mask tokens wherever the batch's last row has tokens.

    The new row copies the last row's attention mask (and token types), so it is shaped like a
    real row but carries no content. Other keys (labels, weights, ...) are left as they are.
    """
    ids, mask = batch["input_ids"], batch["attention_mask"]
    row = torch.where(mask[-1:] > 0, torch.full_like(ids[-1:], mask_token_id), torch.full_like(ids[-1:], pad_token_id))
    out = dict(batch)
    out["input_ids"] = torch.cat([ids, row])
    out["attention_mask"] = torch.cat([mask, mask[-1:]])
    if "token_type_ids" in batch:
        out["token_type_ids"] = torch.cat([batch["token_type_ids"], batch["token_type_ids"][-1:]])
    return out


def mask_entropy_loss(mask_logits: torch.Tensor, coef: float) -> torch.Tensor:
    """coef * mean(p log p) of the prediction on the mask row(s); adding it to the loss maximises entropy."""
    return coef * negative_entropy(mask_logits)


# -- language-adversarial training -------------------------------------------------------------
class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, coef):
        ctx.coef = coef
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.coef * grad, None


def grad_reverse(x: torch.Tensor, coef: float) -> torch.Tensor:
    """Identity forward; the gradient flowing back is multiplied by -coef."""
    return _GradReverse.apply(x, float(coef))


class LanguageAdversary(nn.Module):
    """A linear language-identification head on sentence representations.

    The head always learns to identify the language (cross-entropy on its own parameters). What
    reaches the encoder depends on ``kind``:
    "reversal": -coef x the gradient of that cross-entropy (gradient-reversal layer);
    "entropy": the gradient of coef x mean(p log p) of the head's prediction, i.e. the encoder is
    pushed to make the head's output uniform (the head's parameters are not moved by this term).

    The head counts the rows whose language it identifies (buffer ``language_hits``: identified,
    seen; saved with the state_dict, so a resumed run keeps the count); :meth:`take_accuracy`
    reads and resets it (summed over the processes of a distributed run): whether the adversary
    itself is fooled.
    """

    def __init__(self, hidden_size: int, n_languages: int, kind: str, coef: float):
        super().__init__()
        if kind not in ADVERSARY_KINDS:
            raise LangskewError(f"adversary kind {kind!r} unknown; expected one of {', '.join(ADVERSARY_KINDS)}")
        if n_languages < 2:
            raise LangskewError(f"a language adversary needs at least 2 training languages, got {n_languages}")
        self.kind, self.coef = kind, float(coef)
        self.head = nn.Linear(hidden_size, n_languages)
        self.register_buffer("language_hits", torch.zeros(2, dtype=torch.float64))

    def forward(self, features: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        features = features.float()
        if self.kind == "reversal":
            logits = self.head(grad_reverse(features, self.coef))
            loss = F.cross_entropy(logits, languages)
        else:
            logits = self.head(features.detach())
            frozen = F.linear(features, self.head.weight.detach(), self.head.bias.detach())
            loss = F.cross_entropy(logits, languages) + self.coef * negative_entropy(frozen)
        with torch.no_grad():
            hits = (logits.argmax(dim=-1) == languages).sum().to(self.language_hits.dtype)
            self.language_hits += torch.stack([hits, torch.ones_like(hits) * languages.numel()])
        return loss

    def take_accuracy(self) -> float:
        """The head's language accuracy on the rows it has seen since the last call (NaN if none); resets the count.
        Under ``torch.distributed`` the counts are summed over the processes (the rows of all of them),
        so every process must call it at the same point, as with any collective operation."""
        counts = self.language_hits.clone()
        if _distributed():
            torch.distributed.all_reduce(counts)
        self.language_hits.zero_()
        hits, seen = counts.tolist()
        return hits / seen if seen else math.nan


# -- per-language logit adjustment -------------------------------------------------------------
def log_class_priors(labels: Sequence[int], languages: Sequence[str], n_classes: int,
                     order: Sequence[str] | None = None) -> torch.Tensor:
    """log p(y | language) from training rows: a languages x classes tensor (rows in ``order``).

    A class without rows in a language has no finite prior: an error naming both.
    """
    labels = np.asarray(labels, dtype=np.int64)
    languages = np.asarray(languages, dtype=object).astype(str)
    order = list(order) if order is not None else list(dict.fromkeys(languages.tolist()))
    counts = np.zeros((len(order), n_classes))
    np.add.at(counts, (language_indices(languages, order), labels), 1)
    empty = np.argwhere(counts == 0)
    if len(empty):
        lang, c = empty[0]
        raise LangskewError(f"logit adjustment: label {c} has no training rows in language {order[lang]!r}, "
                            f"so its prior is 0 and its log-prior undefined")
    return torch.tensor(np.log(counts / counts.sum(axis=1, keepdims=True)), dtype=torch.float32)


def adjust_logits(logits: torch.Tensor, languages: torch.Tensor, log_priors: torch.Tensor,
                  tau: float) -> torch.Tensor:
    """logits + tau * log p(y | language of the row) (the training-time logit adjustment)."""
    return logits.float() + tau * log_priors.to(logits.device)[languages]


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


# -- group DRO ---------------------------------------------------------------------------------
def group_ids(languages: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The (language, label) group of each row: language * C + label."""
    return languages * n_classes + labels


class GroupDRO(nn.Module):
    """Online group DRO (Sagawa et al. 2020, Algorithm 1; their code's ``LossComputer``): weights q over groups.

    Each training batch's mean loss per group L_g (0 for a group absent from the batch, as in the
    reference code) updates q_g <- q_g exp(eta (L_g + C / sqrt(n_g))), q normalised, and the loss
    is sum_g q_g L_g with the updated q. ``C`` is the generalisation adjustment (0: off), n_g the
    group's training rows (``group_counts``, needed when C > 0).

    q moves once per optimiser step. With ``update_per_forward`` (the default, a loop without
    gradient accumulation) every training forward is a step. Otherwise the rows of the step's
    micro-batches are pooled: micro-batch j is weighted by q updated with the step's rows seen so
    far (so one micro-batch per step is exactly the reference), and :meth:`step` commits q after
    the optimiser step; under ``torch.distributed`` it first sums the step's group losses and
    counts over the processes, so every process keeps the same q. q is a buffer: it is saved with
    the module's state_dict (and resumed).
    """

    def __init__(self, n_groups: int, step_size: float, generalization_adjustment: float = 0.0,
                 group_counts: Sequence[int] | None = None, update_per_forward: bool = True):
        super().__init__()
        if not step_size > 0:
            raise LangskewError(f"group DRO step size must be > 0, got {step_size}")
        if generalization_adjustment < 0:
            raise LangskewError(f"group DRO generalization_adjustment must be >= 0, got {generalization_adjustment}")
        counts = torch.ones(n_groups) if group_counts is None else torch.as_tensor(group_counts, dtype=torch.float32)
        if counts.numel() != n_groups or (generalization_adjustment and bool((counts <= 0).any())):
            raise LangskewError(f"group DRO: group_counts must give {n_groups} positive counts when "
                                f"generalization_adjustment > 0, got {list(map(float, counts))}")
        if generalization_adjustment and group_counts is None:
            raise LangskewError("group DRO: generalization_adjustment needs the groups' training counts (group_counts)")
        self.step_size, self.update_per_forward = float(step_size), bool(update_per_forward)
        self.register_buffer("q", torch.full((n_groups,), 1.0 / n_groups))
        self.register_buffer("adjustment", float(generalization_adjustment) / counts.clamp(min=1).sqrt())
        self.register_buffer("pending_sum", torch.zeros(n_groups), persistent=False)
        self.register_buffer("pending_count", torch.zeros(n_groups), persistent=False)

    def group_means(self, losses: torch.Tensor, groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the losses per group, rows per group) of a batch."""
        n = self.q.numel()
        if groups.numel() and (int(groups.max()) >= n or int(groups.min()) < 0):
            raise LangskewError(f"group DRO: group {int(groups.max())} outside 0..{n - 1}")
        total = torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
        return total, torch.bincount(groups, minlength=n).to(losses.dtype)

    def updated_q(self, loss_sum: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
        """q exp(eta (mean loss per group + C / sqrt(n_g))), normalised (a group without rows: loss 0)."""
        mean = loss_sum / count.clamp(min=1)
        q = self.q * torch.exp(self.step_size * (mean + self.adjustment.to(mean)))
        return q / q.sum()

    def forward(self, losses: torch.Tensor, groups: torch.Tensor, update: bool = True) -> torch.Tensor:
        total, count = self.group_means(losses, groups)
        mean = total / count.clamp(min=1)
        if not update:
            return (self.q.to(mean.dtype) * mean).sum()
        with torch.no_grad():
            self.pending_sum += total.detach().to(self.pending_sum)
            self.pending_count += count.to(self.pending_count)
            q = self.updated_q(self.pending_sum, self.pending_count)
        if self.update_per_forward:
            self.step(distributed=False)
        return (q.to(mean.dtype) * mean).sum()

    @torch.no_grad()
    def step(self, distributed: bool = True) -> None:
        """Commit q from the rows of the step (summed over processes under torch.distributed)."""
        if distributed and _distributed():
            torch.distributed.all_reduce(self.pending_sum)
            torch.distributed.all_reduce(self.pending_count)
        if not bool(self.pending_count.sum() > 0):
            return
        self.q.copy_(self.updated_q(self.pending_sum, self.pending_count))
        self.pending_sum.zero_()
        self.pending_count.zero_()


# -- resampling --------------------------------------------------------------------------------
def per_language_balanced_probabilities(languages: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """Draw probability of each row: a language keeps its share n_l / n, split equally over its
    K_l classes, then equally over the class's rows: p_i = n_l / (n K_l n_{l,c})."""
    frame = pd.DataFrame({"language": np.asarray(languages).astype(str), "label": np.asarray(labels)})
    if frame.empty:
        raise LangskewError("per-language balanced sampling: no rows")
    n_l = frame.groupby("language")["label"].transform("size")
    k_l = frame.groupby("language")["label"].transform("nunique")
    n_lc = frame.groupby(["language", "label"])["label"].transform("size")
    return (n_l / (len(frame) * k_l * n_lc)).to_numpy(dtype=np.float64)


class PerLanguageBalancedSampler(torch.utils.data.Sampler[int]):
    """Indices drawn with replacement so that each language's classes are drawn equally often.

    A language is drawn as often as it occurs (n_l / n); within it every class is equally likely.
    ``num_samples`` defaults to the number of rows (one epoch). The draw of epoch e depends on
    (seed, e) only: call :meth:`set_epoch` before iterating (as with DistributedSampler).
    """

    def __init__(self, languages: Sequence[str], labels: Sequence[int], num_samples: int | None = None,
                 seed: int = 0):
        self.probabilities = per_language_balanced_probabilities(languages, labels)
        self.num_samples = int(num_samples or len(self.probabilities))
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch, 1])
        yield from rng.choice(len(self.probabilities), size=self.num_samples, replace=True,
                              p=self.probabilities).tolist()


def group_counts(languages: Sequence[str], labels: Sequence[int], order: Sequence[str], n_classes: int) -> np.ndarray:
    """Training rows per (language, label) group, in :func:`group_ids` order (language * C + label)."""
    groups = language_indices(np.asarray(languages, dtype=object).astype(str), order) * n_classes + np.asarray(labels)
    return np.bincount(groups.astype(np.int64), minlength=len(order) * n_classes)


class GroupBalancedSampler(torch.utils.data.WeightedRandomSampler):
    """Rows drawn with replacement, each (language, label) group equally often: weight 1 / n_g per row.

    Sagawa et al.'s ``--reweight_groups`` (a ``WeightedRandomSampler`` over the training rows),
    which their group DRO uses. ``num_samples`` defaults to the number of rows (one epoch). The
    draw of epoch e depends on (seed, e) only: call :meth:`set_epoch` before iterating.
    """

    def __init__(self, languages: Sequence[str], labels: Sequence[int], num_samples: int | None = None,
                 seed: int = 0):
        frame = pd.DataFrame({"language": np.asarray(languages).astype(str), "label": np.asarray(labels)})
        if frame.empty:
            raise LangskewError("group-balanced sampling: no rows")
        n_g = frame.groupby(["language", "label"])["label"].transform("size").to_numpy(dtype=np.float64)
        super().__init__(torch.as_tensor(1.0 / n_g, dtype=torch.float64), int(num_samples or len(frame)),
                         replacement=True)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed, self.epoch, 2]).generate_state(1)[0])
        self.generator = torch.Generator().manual_seed(seed)
        yield from super().__iter__()


def make_sampler(sampling: str, languages: Sequence[str], labels: Sequence[int],
                 seed: int = 0) -> torch.utils.data.Sampler | None:
    """The training sampler of a :class:`MitigationConfig` ``sampling`` (None for "shuffle")."""
    if sampling == "per_language_balanced":
        return PerLanguageBalancedSampler(languages, labels, seed=seed)
    if sampling == "group_balanced":
        return GroupBalancedSampler(languages, labels, seed=seed)
    if sampling == "per_language_subsample":  # SUBG within each language (Idrissi et al. 2022), a fixed subset
        from langskew.baselines import PerLanguageSubsampleSampler

        return PerLanguageSubsampleSampler(languages, labels, seed=seed)
    if sampling != "shuffle":
        raise LangskewError(f"sampling {sampling!r} unknown; expected one of {', '.join(SAMPLINGS)}")
    return None


# -- the combined loss -------------------------------------------------------------------------
def sentence_representation(hidden_states: Sequence[torch.Tensor]) -> torch.Tensor:
    """The last layer's first-token vector (what the language adversary reads)."""
    return hidden_states[-1][:, 0]


class MitigationLoss(nn.Module):
    """Training loss of a sequence classifier with class weights and the configured mitigations.

    Build it from the training rows' labels and languages; call ``loss, logits = it(model, batch)``
    where ``batch`` holds the model inputs, ``labels`` and ``language`` (index into ``languages``).
    In training mode (``model.training``) the loss is

        mean_i w[l_i, y_i] CE(logits_i + tau log p(y | l_i), y_i)       (group DRO: sum_g q_g mean_g)
        + coef_mask mean(p log p) on the appended mask row + the language adversary's loss;

    in eval mode (validation) the mean of the first line's per-row terms (no group weights); rows
    without a ``language`` (e.g. a language not trained on) get the plain cross-entropy. ``logits``
    are always the model's plain logits of the real rows (predict with them). The module moves
    itself to the model's device. Its parameters (the adversary's head) must be given to the
    optimiser; its state_dict holds them and the group weights. With gradient accumulation build
    it with ``update_per_forward=False`` and call :meth:`step` after each optimiser step (group DRO
    moves q once per step); under ``torch.distributed`` call :meth:`sync_gradients` before it.
    """

    def __init__(self, config: MitigationConfig, *, labels: Sequence[int], languages: Sequence[str],
                 n_classes: int, language_order: Sequence[str] | None = None, weighting: str = "none",
                 hidden_size: int | None = None, mask_token_id: int | None = None, pad_token_id: int = 0,
                 update_per_forward: bool = True):
        super().__init__()
        if weighting not in SCHEMES:
            raise LangskewError(f"weighting {weighting!r} unknown; expected one of {', '.join(SCHEMES)}")
        self.config, self.n_classes = config, int(n_classes)
        labels = np.asarray(labels, dtype=np.int64)
        languages = np.asarray(languages, dtype=object).astype(str)
        self.languages = list(language_order) if language_order is not None else list(dict.fromkeys(languages))
        table = class_weights(labels, languages, self.n_classes, weighting)
        self.register_buffer("weights", weight_matrix(table, self.languages))
        self.register_buffer("log_priors", log_class_priors(labels, languages, self.n_classes, self.languages)
                             if config.logit_adjustment else torch.zeros(len(self.languages), self.n_classes))
        if config.mask_entropy and mask_token_id is None:
            raise LangskewError("mask entropy maximisation needs a tokenizer with a mask token")
        self.mask_token_id, self.pad_token_id = mask_token_id, int(pad_token_id or 0)
        self.adversary = None
        if config.adversary:
            if hidden_size is None:
                raise LangskewError("a language adversary needs the model's hidden_size")
            self.adversary = LanguageAdversary(int(hidden_size), len(self.languages), config.adversary,
                                               config.adversary_coef)
        self.dro = None
        if config.group_dro:
            counts = group_counts(languages, labels, self.languages, self.n_classes)
            self.dro = GroupDRO(len(counts), config.group_dro, config.group_dro_adjustment, counts,
                                update_per_forward=update_per_forward)

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        """w[l, y] * CE of the (adjusted) logits, per row."""
        if self.config.logit_adjustment:
            logits = adjust_logits(logits, languages, self.log_priors, self.config.logit_adjustment)
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        return self.weights[languages, labels] * ce

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, languages: torch.Tensor | None,
                  training: bool = False) -> torch.Tensor:
        """Training: the group-DRO objective (updating q) when configured, else the mean; eval: the mean
        (the plain cross-entropy for rows without a language)."""
        if languages is None:
            return F.cross_entropy(logits.float(), labels)
        losses = self.example_losses(logits, labels, languages)
        if self.dro is not None and training:
            return self.dro(losses, group_ids(languages, labels, self.n_classes))
        return losses.mean()

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        device = next(model.parameters()).device
        if self.weights.device != device:
            self.to(device)
        labels, languages = batch["labels"], batch.get(LANGUAGE_KEY)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights", LANGUAGE_KEY)}
        if not model.training:
            logits = model(**inputs).logits
            return self.task_loss(logits, labels, languages), logits
        if languages is None:
            raise LangskewError(f"MitigationLoss: a training batch needs a {LANGUAGE_KEY!r} column "
                                "(each row's index into the training languages)")
        n = labels.shape[0]
        if self.config.mask_entropy:
            inputs = append_mask_row(inputs, self.mask_token_id, self.pad_token_id)
        out = model(**inputs, output_hidden_states=self.adversary is not None)
        logits = out.logits[:n]
        loss = self.task_loss(logits, labels, languages, training=True)
        if self.config.mask_entropy:
            loss = loss + mask_entropy_loss(out.logits[n:], self.config.mask_entropy)
        if self.adversary is not None:
            loss = loss + self.adversary(sentence_representation(out.hidden_states)[:n], languages)
        return loss, logits

    @torch.no_grad()
    def sync_gradients(self) -> None:
        """Average the gradients of the loss's own parameters (the adversary's head) over the
        processes of ``torch.distributed`` (DDP does this for the model only); no-op otherwise."""
        if not _distributed():
            return
        world = torch.distributed.get_world_size()
        for p in self.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            torch.distributed.all_reduce(p.grad)
            p.grad /= world

    def step(self) -> None:
        """After an optimiser step: commit group DRO's q from the step's rows (no-op without group DRO)."""
        if self.dro is not None:
            self.dro.step()

    def group_weights(self) -> dict[str, float] | None:
        """Group DRO's q by "language/label" (None without group DRO)."""
        if self.dro is None:
            return None
        return {f"{lang}/{c}": float(self.dro.q[i * self.n_classes + c]) for i, lang in enumerate(self.languages)
                for c in range(self.n_classes)}


# -- collation and metrics ---------------------------------------------------------------------
def mitigation_collator(tokenizer, **kwargs):
    """A collator for :class:`MitigationTrainer` and plain loops: pads with
    ``DataCollatorWithPadding(tokenizer, **kwargs)`` after dropping the columns that are not
    numbers or lists of numbers (``text``, ``id``, ...), which ``remove_unused_columns=False``
    lets through and which the padding collator cannot turn into tensors."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer, **kwargs)

    def numeric(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(isinstance(v, (int, float, np.integer, np.floating)) for v in value)
        return isinstance(value, (int, float, np.integer, np.floating, torch.Tensor, np.ndarray))

    def collate(features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        keep = [k for k in features[0] if numeric(features[0][k])]
        return pad([{k: f[k] for k in keep} for f in features])

    return collate


def group_accuracies(predictions: Sequence[int], labels: Sequence[int], languages: Sequence[str]) -> dict[str, float]:
    """Accuracy overall, of the worst language and of the worst (language, label) group present."""
    frame = pd.DataFrame({"correct": np.asarray(predictions) == np.asarray(labels),
                          "language": np.asarray(languages, dtype=object).astype(str), "label": np.asarray(labels)})
    if frame.empty:
        raise LangskewError("group accuracies: no rows")
    return {"accuracy": float(frame["correct"].mean()),
            "worst_language_accuracy": float(frame.groupby("language")["correct"].mean().min()),
            "worst_group_accuracy": float(frame.groupby(["language", "label"])["correct"].mean().min())}


def group_metrics(languages: Sequence[str]):
    """A Trainer ``compute_metrics`` giving :func:`group_accuracies` of an evaluation set whose rows
    have these ``languages`` (in order; the Trainer evaluates rows in order)."""
    languages = list(languages)

    def compute_metrics(eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        if len(logits) != len(languages):
            raise LangskewError(f"group_metrics: {len(logits)} predictions for {len(languages)} languages")
        return group_accuracies(np.asarray(logits).argmax(-1), eval_pred.label_ids, languages)

    return compute_metrics


# -- Hugging Face Trainer ----------------------------------------------------------------------
#: The file in a Trainer checkpoint folder holding the loss's state (adversary head, group DRO's q).
STATE_FILE = "mitigation.pt"


def _refuse_unhonoured(args, compute_loss_func, optimizer, config: MitigationConfig) -> None:
    """Stop on a Trainer setting the mitigation loss would silently ignore, naming it."""
    if args.remove_unused_columns:
        raise LangskewError("MitigationTrainer: set remove_unused_columns=False in the TrainingArguments, "
                            f"or the Trainer drops the {LANGUAGE_KEY!r} column the loss needs")
    if args.label_smoothing_factor:
        raise LangskewError("MitigationTrainer: label_smoothing_factor is not applied by the mitigation loss; "
                            "set it to 0")
    if compute_loss_func is not None:
        raise LangskewError("MitigationTrainer: compute_loss_func would replace the mitigation loss; leave it out")
    if optimizer is not None:
        raise LangskewError("MitigationTrainer: an optimizer given in optimizers= lacks the loss's own parameters "
                            "(the adversary's head); let the Trainer create it (optimizer_cls_and_kwargs= "
                            "picks its class)")
    sampling = config.sampling
    if config.group_dro_weight_decay and args.weight_decay != config.group_dro_weight_decay:
        raise LangskewError(f"MitigationTrainer: group_dro_weight_decay={config.group_dro_weight_decay} is the "
                            "optimiser's; set weight_decay to it in the TrainingArguments (the Trainer's AdamW "
                            f"decays decoupled, off biases and LayerNorm weights), not {args.weight_decay}")
    if sampling != "shuffle" and getattr(args, "train_sampling_strategy", "random") not in ("random", None):
        raise LangskewError(f"MitigationTrainer: train_sampling_strategy={args.train_sampling_strategy!r} is "
                            f"replaced by MitigationConfig.sampling={sampling!r}; leave it at 'random'")


class _MitigationTrainerMixin:
    """A ``Trainer`` whose loss is a :class:`MitigationLoss` (``mitigation=`` keyword).

    Batches need a ``language`` column (each row's index into the loss's languages), so the
    TrainingArguments must say ``remove_unused_columns=False`` (:func:`mitigation_collator`
    drops text columns the model cannot take). Settings the loss cannot honour
    (``label_smoothing_factor``, ``compute_loss_func``, an optimizer of your own,
    ``train_sampling_strategy`` beside a ``sampling`` other than shuffle, a ``group_dro_weight_decay``
    other than ``args.weight_decay``) stop it with an error naming them. The loss's own parameters
    (the adversary's head) join the optimiser at the learning rate, their gradients are
    averaged over processes, group DRO moves q once per optimiser step, the training sampler
    is ``MitigationConfig.sampling``'s (``sampler_seed``, default args.seed), and each
    checkpoint carries the loss's state in ``mitigation.pt``, which resuming restores.
    """

    loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by the accumulation steps

    def __init__(self, *args, mitigation: MitigationLoss, sampler_seed: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        _refuse_unhonoured(self.args, kwargs.get("compute_loss_func"), self.optimizer, mitigation.config)
        self.model_accepts_loss_kwargs = False
        if mitigation.dro is not None:
            mitigation.dro.update_per_forward = False
        self.mitigation = mitigation.to(self.args.device)
        self.sampler_seed = self.args.seed if sampler_seed is None else int(sampler_seed)
        self.add_callback(_step_hook(self.mitigation))

    def _get_train_sampler(self, train_dataset=None):
        dataset = self.train_dataset if train_dataset is None else train_dataset
        if self.mitigation.config.sampling == "shuffle":
            return super()._get_train_sampler(dataset)
        languages = [self.mitigation.languages[int(i)] for i in _column(dataset, LANGUAGE_KEY)]
        return make_sampler(self.mitigation.config.sampling, languages, _column(dataset, "labels", "label"),
                            seed=self.sampler_seed)

    def create_optimizer(self, *args, **kwargs):
        optimizer = super().create_optimizer(*args, **kwargs)
        extra = list(self.mitigation.parameters())
        known = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if extra and not all(id(p) in known for p in extra):
            optimizer.add_param_group({"params": extra, "lr": self.args.learning_rate, "weight_decay": 0.0})
        return optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from transformers.modeling_outputs import SequenceClassifierOutput

        loss, logits = self.mitigation(model, inputs)
        return (loss, SequenceClassifierOutput(loss=loss, logits=logits)) if return_outputs else loss

    def _save(self, output_dir=None, state_dict=None):
        super()._save(output_dir, state_dict=state_dict)
        folder = output_dir if output_dir is not None else self.args.output_dir
        torch.save(self.mitigation.state_dict(), os.path.join(folder, STATE_FILE))

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        path = os.path.join(resume_from_checkpoint, STATE_FILE)
        if not os.path.exists(path):
            raise LangskewError(f"MitigationTrainer: checkpoint {resume_from_checkpoint} has no {STATE_FILE} "
                                "(the adversary's head and group DRO's q); it was not saved by a MitigationTrainer")
        self.mitigation.load_state_dict(torch.load(path, map_location=self.args.device))


def _step_hook(loss: MitigationLoss):
    """A Trainer callback: the loss's gradients averaged over processes before each optimiser step,
    zeroed and q committed after it."""
    from transformers import TrainerCallback

    class StepHook(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            loss.sync_gradients()

        def on_step_end(self, args, state, control, **kwargs):
            loss.zero_grad(set_to_none=True)  # the Trainer zeroes the model's gradients only
            loss.step()

    return StepHook()


def _trainer_class():
    from transformers import Trainer

    return type("MitigationTrainer", (_MitigationTrainerMixin, Trainer),
                {"__doc__": _MitigationTrainerMixin.__doc__, "__module__": __name__})


def _column(dataset, *names: str) -> list:
    """A column of a ``datasets.Dataset``, a DataFrame or a list of dicts (the first of ``names`` present)."""
    for name in names:
        if hasattr(dataset, "column_names") and name in dataset.column_names:
            return list(dataset[name])
        if isinstance(dataset, pd.DataFrame) and name in dataset.columns:
            return dataset[name].tolist()
        if isinstance(dataset, Sequence) and len(dataset) and name in dataset[0]:
            return [row[name] for row in dataset]
    raise LangskewError(f"training data: no column {' or '.join(map(repr, names))} for the sampler")


def __getattr__(name: str):
    # MitigationTrainer is built on first use: importing transformers' Trainer is slow and needs accelerate.
    if name == "MitigationTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADVERSARY_KINDS", "CONDITION_KEYS", "GroupBalancedSampler", "GroupDRO", "LanguageAdversary",
           "MitigationConfig", "MitigationLoss", "MitigationTrainer", "PerLanguageBalancedSampler", "SAMPLINGS",
           "STATE_FILE", "adjust_logits", "append_mask_row", "grad_reverse", "group_accuracies", "group_counts",
           "group_ids", "group_metrics", "language_indices", "log_class_priors", "make_sampler",
           "mask_entropy_loss", "mitigation_collator", "negative_entropy", "per_language_balanced_probabilities",
           "per_language_class_weights", "sentence_representation", "weight_matrix"]
