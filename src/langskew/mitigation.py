"""Remedies for language-specific class skew, usable with any PyTorch or Hugging Face training loop.

Study A's fine-tuning runs these as conditions (``study_a.conditions`` in the config); the same
functions serve a script of your own (docs/mitigation.md has a worked example).

- :func:`per_language_class_weights`: w[l, c] = n_l / (C n_{l,c}) from a labels/languages table
  (the Study A weights, :mod:`langskew.study_a.weights`).
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
SAMPLINGS = ("shuffle", "per_language_balanced")
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
    group_dro: step size eta of the group weights (None: off).
    sampling: "shuffle" (every row once per epoch) or "per_language_balanced".
    """

    mask_entropy: float = 0.0
    adversary: str | None = None
    adversary_coef: float = 0.0
    logit_adjustment: float = 0.0
    group_dro: float | None = None
    sampling: str = "shuffle"

    def __post_init__(self):
        for key in ("mask_entropy", "adversary_coef", "logit_adjustment"):
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
        if self.sampling not in SAMPLINGS:
            raise LangskewError(f"mitigation: sampling {self.sampling!r} unknown; expected one of {', '.join(SAMPLINGS)}")

    @classmethod
    def from_condition(cls, condition: Mapping[str, Any] | None) -> "MitigationConfig":
        """From a Study A condition's mitigation keys (see :data:`CONDITION_KEYS`), e.g.
        ``{"mask_entropy": 1}``, ``{"adversary": {"kind": "reversal", "coef": 0.1}}``,
        ``{"logit_adjustment": 1.0}``, ``{"group_dro": {"step_size": 0.01}}``,
        ``{"sampling": "per_language_balanced"}``; ``train`` and ``weighting`` are ignored."""
        cond = {k: v for k, v in dict(condition or {}).items() if k not in ("train", "weighting")}
        unknown = sorted(set(cond) - set(CONDITION_KEYS))
        if unknown:
            raise LangskewError(f"condition: unknown key {unknown[0]!r}; mitigation keys: {', '.join(CONDITION_KEYS)}")
        adversary = cond.get("adversary") or {}
        dro = cond.get("group_dro") or {}
        return cls(mask_entropy=float(cond.get("mask_entropy") or 0.0),
                   adversary=adversary.get("kind"), adversary_coef=float(adversary.get("coef") or 0.0),
                   logit_adjustment=float(cond.get("logit_adjustment") or 0.0),
                   group_dro=float(dro["step_size"]) if dro else None,
                   sampling=str(cond.get("sampling") or "shuffle"))

    @property
    def changes_loss(self) -> bool:
        """Whether the loss differs from the (weighted) cross-entropy."""
        return bool(self.mask_entropy or self.adversary or self.logit_adjustment or self.group_dro)


# -- class weights ---------------------------------------------------------------------------
def per_language_class_weights(table: pd.DataFrame, n_classes: int | None = None, scheme: str = "per_language",
                               label_column: str = "label", language_column: str = "language") -> dict[str, np.ndarray]:
    """{language: class-weight vector} from a table with one row per training example.

    ``scheme`` "per_language" gives w[l, c] = n_l / (C n_{l,c}) (scikit-learn's "balanced"
    weights per language), "global" n / (C n_c), "none" ones. Labels are 0..C-1; ``n_classes``
    defaults to the largest label + 1.
    """
    for col in (label_column, language_column):
        if col not in table.columns:
            raise LangskewError(f"per_language_class_weights: column {col!r} missing")
    labels = table[label_column].to_numpy()
    if n_classes is None:
        n_classes = int(labels.max()) + 1
    return class_weights(labels, table[language_column].astype(str).to_numpy(), n_classes, scheme)


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
    """

    def __init__(self, hidden_size: int, n_languages: int, kind: str, coef: float):
        super().__init__()
        if kind not in ADVERSARY_KINDS:
            raise LangskewError(f"adversary kind {kind!r} unknown; expected one of {', '.join(ADVERSARY_KINDS)}")
        if n_languages < 2:
            raise LangskewError(f"a language adversary needs at least 2 training languages, got {n_languages}")
        self.kind, self.coef = kind, float(coef)
        self.head = nn.Linear(hidden_size, n_languages)

    def forward(self, features: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        features = features.float()
        if self.kind == "reversal":
            return F.cross_entropy(self.head(grad_reverse(features, self.coef)), languages)
        head_loss = F.cross_entropy(self.head(features.detach()), languages)
        frozen = F.linear(features, self.head.weight.detach(), self.head.bias.detach())
        return head_loss + self.coef * negative_entropy(frozen)


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


# -- group DRO ---------------------------------------------------------------------------------
def group_ids(languages: torch.Tensor, labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The (language, label) group of each row: language * C + label."""
    return languages * n_classes + labels


class GroupDRO(nn.Module):
    """Online group DRO: weights q over groups, updated by exponentiated gradient each batch.

    For the groups present in a batch with mean losses L_g: q_g <- q_g exp(eta L_g), then q is
    normalised; the loss is sum_g q_g L_g over the present groups. q is a buffer, so it is saved
    with the module's state_dict (and resumed).
    """

    def __init__(self, n_groups: int, step_size: float):
        super().__init__()
        if step_size <= 0:
            raise LangskewError(f"group DRO step size must be > 0, got {step_size}")
        self.step_size = float(step_size)
        self.register_buffer("q", torch.full((n_groups,), 1.0 / n_groups))

    def forward(self, losses: torch.Tensor, groups: torch.Tensor, update: bool = True) -> torch.Tensor:
        n = self.q.numel()
        count = torch.bincount(groups, minlength=n).to(losses.dtype)
        if count.numel() > n:
            raise LangskewError(f"group DRO: group {int(groups.max())} outside 0..{n - 1}")
        total = torch.zeros(n, dtype=losses.dtype, device=losses.device).index_add(0, groups, losses)
        present = count > 0
        mean = torch.where(present, total / count.clamp(min=1), torch.zeros_like(total))
        if update:
            with torch.no_grad():
                q = self.q * torch.exp(self.step_size * mean.detach() * present)
                self.q.copy_(q / q.sum())
        return (self.q.to(mean.dtype) * mean).sum()


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

    in eval mode (validation) the mean of the first line's per-row terms (no group weights). ``logits`` are always
    the model's plain logits of the real rows (predict with them). The module's parameters (the
    adversary's head) must be given to the optimiser; its state_dict holds them and the group
    weights.
    """

    def __init__(self, config: MitigationConfig, *, labels: Sequence[int], languages: Sequence[str],
                 n_classes: int, language_order: Sequence[str] | None = None, weighting: str = "none",
                 hidden_size: int | None = None, mask_token_id: int | None = None, pad_token_id: int = 0):
        super().__init__()
        if weighting not in SCHEMES:
            raise LangskewError(f"weighting {weighting!r} unknown; expected one of {', '.join(SCHEMES)}")
        self.config, self.n_classes = config, int(n_classes)
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
        self.dro = GroupDRO(len(self.languages) * self.n_classes, config.group_dro) if config.group_dro else None

    def example_losses(self, logits: torch.Tensor, labels: torch.Tensor, languages: torch.Tensor) -> torch.Tensor:
        """w[l, y] * CE of the (adjusted) logits, per row."""
        if self.config.logit_adjustment:
            logits = adjust_logits(logits, languages, self.log_priors, self.config.logit_adjustment)
        ce = F.cross_entropy(logits.float(), labels, reduction="none")
        return self.weights[languages, labels] * ce

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor, languages: torch.Tensor,
                  training: bool = False) -> torch.Tensor:
        """Training: the group-DRO objective (updating q) when configured, else the mean; eval: the mean."""
        losses = self.example_losses(logits, labels, languages)
        if self.dro is not None and training:
            return self.dro(losses, group_ids(languages, labels, self.n_classes))
        return losses.mean()

    def forward(self, model: nn.Module, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        labels, languages = batch["labels"], batch[LANGUAGE_KEY]
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "weights", LANGUAGE_KEY)}
        if not model.training:
            logits = model(**inputs).logits
            return self.task_loss(logits, labels, languages), logits
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


# -- Hugging Face Trainer ----------------------------------------------------------------------
def _trainer_class():
    from transformers import Trainer
    from transformers.modeling_outputs import SequenceClassifierOutput

    class MitigationTrainer(Trainer):
        """A ``Trainer`` whose loss is a :class:`MitigationLoss` (``mitigation=`` keyword).

        Batches need a ``language`` column (each row's index into the loss's languages), so the
        TrainingArguments must say ``remove_unused_columns=False`` (the model's forward does not
        take ``language``, and the Trainer would drop it). The loss's own parameters (the
        adversary's head) join the optimiser at the learning rate.
        """

        loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by the accumulation steps

        def __init__(self, *args, mitigation: MitigationLoss, **kwargs):
            super().__init__(*args, **kwargs)
            if self.args.remove_unused_columns:
                raise LangskewError("MitigationTrainer: set remove_unused_columns=False in the TrainingArguments, "
                                    f"or the Trainer drops the {LANGUAGE_KEY!r} column the loss needs")
            self.model_accepts_loss_kwargs = False
            self.mitigation = mitigation.to(self.args.device)

        def create_optimizer(self, *args, **kwargs):
            optimizer = super().create_optimizer(*args, **kwargs)
            extra = list(self.mitigation.parameters())
            known = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if extra and not all(id(p) in known for p in extra):
                optimizer.add_param_group({"params": extra, "lr": self.args.learning_rate, "weight_decay": 0.0})
            return optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, logits = self.mitigation(model, inputs)
            return (loss, SequenceClassifierOutput(loss=loss, logits=logits)) if return_outputs else loss

    return MitigationTrainer


def __getattr__(name: str):
    # MitigationTrainer is built on first use: importing transformers' Trainer is slow and needs accelerate.
    if name == "MitigationTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ADVERSARY_KINDS", "CONDITION_KEYS", "GroupDRO", "LanguageAdversary", "MitigationConfig",
           "MitigationLoss", "MitigationTrainer", "PerLanguageBalancedSampler", "SAMPLINGS", "adjust_logits",
           "append_mask_row", "grad_reverse", "group_ids", "language_indices", "log_class_priors",
           "mask_entropy_loss", "negative_entropy", "per_language_balanced_probabilities",
           "per_language_class_weights", "sentence_representation", "weight_matrix"]
