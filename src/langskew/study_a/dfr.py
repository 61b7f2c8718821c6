"""Deep feature reweighting (DFR) of a fine-tuned model: a Study A condition that trains no encoder.

DFR (Kirichenko et al., ICLR 2023) keeps a model's encoder frozen and refits only its last
layer on data in which every group is equally represented. This stage runs it the way their
reference code's DFR on validation data does (:func:`langskew.baselines.dfr`): on the features
the fine-tuned classifier's last linear layer reads, an L1 logistic regression is refitted on
(language, label)-balanced subsamples of the validation rows, its C chosen by worst-group
accuracy on a held-out half of them, 20 refits averaged, every feature standardised with the
training rows' mean and scale. The new last layer then predicts every test variant.

The encoder is the baseline condition's (the first plain imbalanced condition; see
``mitigation_baseline`` in rules/study_a_common.smk), seed by seed, so the report's
``<baseline>_dfr`` rows are paired with the baseline's. Its training rows are the imbalanced
training subset the baseline was fine-tuned on, its validation rows the imbalanced validation
subset the baseline picked its checkpoint with.

Features: the input of the classifier's last ``torch.nn.Linear`` with ``num_labels`` outputs,
captured by a forward hook, in evaluation mode (dropout off). For BERT that is the pooler
output, for XLM-R the head's ``tanh(dense(<s>))``; the logits are that layer applied to them
(tested).
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_json, write_parquet
from langskew.workflow import Job

logger = logging.getLogger(__name__)


def last_linear(model: Any) -> Any:
    """The classifier's last ``torch.nn.Linear`` module with ``config.num_labels`` outputs: the layer
    whose output is the logits."""
    import torch

    n_labels = int(model.config.num_labels)
    found = [m for _, m in model.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_labels]
    if not found:
        raise LangskewError(f"dfr: the model has no linear layer with {n_labels} outputs (num_labels)")
    return found[-1]


def classifier_features(model: Any, tokenizer: Any, df: pd.DataFrame, max_length: int, batch_size: int,
                        precision: str = "fp32") -> tuple[np.ndarray, np.ndarray]:
    """(features N x d, logits N x C) in row order: what the last linear layer reads and what it
    gives, for rows tokenised as fine-tuning tokenises them (pairs as pairs)."""
    import torch

    from langskew.devices import amp_dtype, autocast
    from langskew.study_a.finetune import collate, encode

    layer = last_linear(model)
    device = next(model.parameters()).device
    captured: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach().float().cpu()))
    feats = encode(tokenizer, df, max_length)
    order = np.argsort([len(f["input_ids"]) for f in feats], kind="stable")  # batches of similar length
    features = np.zeros((len(df), layer.in_features), dtype=np.float32)
    logits = np.zeros((len(df), layer.out_features), dtype=np.float32)
    model.eval()
    try:
        with torch.no_grad(), autocast(device, amp_dtype(device, precision)):
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = collate([feats[i] for i in idx], tokenizer.pad_token_id)
                inputs = {k: v.to(device) for k, v in batch.items() if k not in ("labels", "weights")}
                logits[idx] = model(**inputs).logits.float().cpu().numpy()
                features[idx] = captured.pop().numpy()
    finally:
        hook.remove()
    return features, logits


def groups_of(df: pd.DataFrame) -> np.ndarray:
    """The (language, label) group of every row, as one string "language/label"."""
    return (df["language"].astype(str) + "/" + df["label"].astype("int64").astype(str)).to_numpy()


def dfr_predictions(head: Any, features: Mapping[str, np.ndarray],
                    test_sets: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The predictions table of the refitted head on every test variant, in the layout of
    fine-tuning's ``predictions.parquet`` (:func:`langskew.study_a.finetune.prediction_table`)."""
    from langskew.study_a.finetune import prediction_table

    return pd.concat([prediction_table(variant, df, head.predict_proba(features[variant]))
                      for variant, df in test_sets.items()], ignore_index=True)


def check_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The stage's settings with defaults, checked before any model is loaded."""
    from langskew.baselines import DFR_C_OPTIONS

    s = {"n_retrains": 20, "c_options": list(DFR_C_OPTIONS), "max_train_rows": None, "batch_size": 64,
         "precision": "fp32", **dict(settings)}
    if int(s["n_retrains"]) < 1:
        raise LangskewError(f"study_a.dfr.n_retrains must be >= 1, got {s['n_retrains']}")
    if not s["c_options"] or any(float(c) <= 0 for c in s["c_options"]):
        raise LangskewError(f"study_a.dfr.c_options must be positive numbers, got {s['c_options']}")
    if s["max_train_rows"] is not None and int(s["max_train_rows"]) < 2:
        raise LangskewError(f"study_a.dfr.max_train_rows must be >= 2 or null, got {s['max_train_rows']}")
    return s


def check_validation(val: pd.DataFrame, n_classes: int) -> None:
    """Every label of every language needs at least two validation rows (one per half of the C search)."""
    from langskew.study_a.inference import check_frame

    check_frame(val, ("language", "label", "text", "text_pair"))
    bad = val["label"][(val["label"] < 0) | (val["label"] >= n_classes)]
    if len(bad):
        raise LangskewError(f"dfr: validation label {int(bad.iloc[0])} is outside 0..{n_classes - 1}")
    counts = val.groupby(["language", "label"]).size().unstack(fill_value=0).reindex(
        columns=range(n_classes), fill_value=0)
    lang, label = np.unravel_index(int(counts.to_numpy().argmin()), counts.shape)
    if counts.to_numpy().min() < 2:
        raise LangskewError(f"dfr: language {counts.index[lang]!r} has {int(counts.iloc[lang, label])} validation "
                            f"rows of label {label}; DFR needs at least 2 per (language, label) group")


def dfr_job(job: Job, *, labels: Sequence[str], test_variants: Sequence[str], max_length: int,
            settings: Mapping[str, Any], model: Mapping[str, Any], seed: int) -> None:
    """Snakemake job: DFR of one fine-tuned run (module docstring).

    input: model (the baseline run's fine-tuned folder), train, validation, tests (list, same order
    as ``test_variants``). ``settings``: study_a.dfr (n_retrains, c_options, max_train_rows,
    batch_size, precision). ``model``: the model entry (revision, trust_remote_code).
    output: predictions (parquet, fine-tuning's layout), metrics (json: C, rows, groups, the rule).
    """
    from langskew.baselines import dfr
    from langskew.devices import set_threads
    from langskew.study_a.inference import load_for_inference, subsample

    s = check_settings(settings)
    n_classes = len(labels)
    tests = [job.input.tests] if isinstance(job.input.tests, str) else list(job.input.tests)
    if len(tests) != len(test_variants):
        raise LangskewError(f"dfr: input.tests has {len(tests)} files for test_variants {list(test_variants)}")
    val = pd.read_parquet(job.input.validation)
    check_validation(val, n_classes)
    train = subsample(pd.read_parquet(job.input.train), s["max_train_rows"], int(seed))
    test_sets = {v: pd.read_parquet(p) for v, p in zip(test_variants, tests)}
    set_threads(job.threads)
    tokenizer, classifier = load_for_inference(str(job.input.model), {**dict(model), "revision": None})
    extract = {name: classifier_features(classifier, tokenizer, df, int(max_length), int(s["batch_size"]),
                                         str(s["precision"]))[0]
               for name, df in {"train": train, "validation": val, **test_sets}.items()}
    groups = groups_of(val)
    head = dfr(extract["train"], extract["validation"], val["label"].to_numpy(), groups, n_classes,
               seed=int(seed), n_retrains=int(s["n_retrains"]), c_options=[float(c) for c in s["c_options"]])
    n_groups = len(set(groups))
    logger.info("DFR: C = %g from %s, %d refits on %d validation rows (%d groups), standardised on %d training rows",
                head.C, s["c_options"], s["n_retrains"], len(val), n_groups, len(train))
    write_parquet(dfr_predictions(head, extract, test_sets), job.output.predictions)
    write_json({"model_selection": "val_loss (baseline's checkpoint); C: worst_group_accuracy", "C": head.C,
                "c_options": s["c_options"], "n_retrains": int(s["n_retrains"]), "n_validation_rows": len(val),
                "n_train_rows_standardised": len(train), "n_groups": n_groups, "seed": int(seed)},
               job.output.metrics)
