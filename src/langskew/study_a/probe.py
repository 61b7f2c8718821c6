"""Language-identification (LID) probe on sentence representations (Study A, Table 4).

A strongly L2-regularised logistic regression (C = 1e-4) predicts an example's language
from its sentence representation; the mean 5-fold cross-validated accuracy measures how
separated the languages are in the model's latent space (higher = more separated).

The regression is the authors' *multinomial* one for any number of languages: one weight
vector per language, all of them penalised, minimising
``C * sum_i -log softmax(W x_i + b)[y_i] + ||W||^2 / 2`` (intercepts unpenalised).
scikit-learn fits that model for three or more languages; for two it fits the binary model
(one vector v), whose penalty is ``||v||^2 / 2``. The multinomial optimum has
``w_1 = -w_0 = v / 2``, so its penalty is ``||v||^2 / 4`` and the two models are the same
at binary C = 2 x multinomial C (:func:`lid_classifier`).

Sentence representation (docs/studies.md): the last layer's *pooler output* when the encoder has
a pooler (mBERT), else the first-token vector of the last layer (XLM-R, whose
classification head has no pooler). Pairs (XNLI) are read as ``pair_input`` says: "premise"
embeds the premise alone, which is what the authors' probe computed (their feature-extraction
pipeline is called with ``text_pair=`` but its parameter handling drops that argument, so the
hypothesis never reaches the tokenizer); "pair" encodes premise and hypothesis as a true pair,
as in fine-tuning.

The layer sweep (integer layers, 0 = embeddings, and ``"all"``; langskew's extension) reads the
*mean over the non-padding tokens* of each hidden state: a first-token vector carries no input
at the embedding layer (it is the same [CLS] / <s> embedding for every row). The "last" row
uses raw features, like the paper. C = 1e-4 was chosen for the last layer's features; other
layers have other scales (the embedding layer's token mean is much shorter than a pooler
output), and an L2 penalty of fixed strength means a different constraint at each scale. So the
sweep standardises each feature dimension within each training fold by default
(``sweep_features: standardised``; ``raw`` as the option) and the table records the features'
scale (``feature_norm``, the mean L2 norm of the raw rows) and which features were used.

Models are loaded as classifiers (:func:`langskew.study_a.inference.load_for_inference`);
the (random) classification head of a pretrained checkpoint is never used.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.errors import LangskewError
from langskew.io import write_csv
from langskew.progress import progress
from langskew.study_a.inference import (REQUIRED_COLUMNS, check_frame, load_for_inference, model_source,
                                        read_examples)
from langskew.workflow import Job

logger = logging.getLogger(__name__)

LayerSpec = str | int
PRECISIONS = ("fp32", "fp16", "bf16")
PAIR_INPUTS = ("premise", "pair")  # the authors' computation first (module docstring)
SWEEP_FEATURES = ("standardised", "raw")


def encoder_of(model: Any) -> Any:
    """The bare encoder of a ``*ForSequenceClassification`` model (or the model itself)."""
    return getattr(model, "base_model", model)


def _layer_names(layers: Sequence[LayerSpec], n_hidden: int) -> list[LayerSpec]:
    """Expand ``"all"`` to 0..n_hidden-1 and validate indices (n_hidden includes embeddings)."""
    out: list[LayerSpec] = []
    for layer in layers:
        if layer == "all":
            out.extend(range(n_hidden))
        elif layer == "last":
            out.append("last")
        else:
            try:
                idx = int(layer)
            except (TypeError, ValueError):
                raise LangskewError(f"probe layer {layer!r}: expected 'last', 'all' or an integer") from None
            if not 0 <= idx < n_hidden:
                raise LangskewError(f"probe layer {idx}: the model has hidden states 0..{n_hidden - 1}")
            out.append(idx)
    return list(dict.fromkeys(out))  # de-duplicate, keep order


def check_pair_input(pair_input: str) -> None:
    if pair_input not in PAIR_INPUTS:
        raise LangskewError(f"probe pair_input {pair_input!r}: expected one of {', '.join(PAIR_INPUTS)}")


def encode_batch(tokenizer: Any, batch: pd.DataFrame, max_length: int, device: Any, pair_input: str = "pair") -> dict:
    """Tokenise a batch, padded to its longest row: pairs when ``text_pair`` is set and ``pair_input``
    is "pair", the first text alone with "premise" (the authors' probe input)."""
    check_pair_input(pair_input)
    texts = batch["text"].astype(str).tolist()
    pairs = batch["text_pair"].tolist() if "text_pair" in batch.columns else [None] * len(texts)
    pairs = None if pair_input == "premise" or pairs[0] is None or pd.isna(pairs[0]) else [str(p) for p in pairs]
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def length_order(df: pd.DataFrame) -> np.ndarray:
    """Row order by character length (less padding per batch); invert with ``argsort``."""
    lengths = df["text"].astype(str).str.len()
    if "text_pair" in df.columns:
        lengths = lengths + df["text_pair"].fillna("").astype(str).str.len()
    return np.argsort(lengths.to_numpy(), kind="stable")


def token_mean(hidden: Any, attention_mask: Any) -> Any:
    """Mean of each row's hidden states over its non-padding tokens (attention mask 1)."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)


def representation_name(layer: LayerSpec, has_pooler: bool) -> str:
    """What :func:`sentence_representations` reads at ``layer``."""
    if str(layer) == "last":
        return "pooler output" if has_pooler else "first token"
    return "token mean"


def sentence_representations(model: Any, tokenizer: Any, df: pd.DataFrame,
                             layers: Sequence[LayerSpec] = ("last",), batch_size: int = 64,
                             max_length: int = 512, precision: str = "fp32",
                             pair_input: str = "pair") -> dict[str, np.ndarray]:
    """Sentence vectors per layer, keyed by layer name (``"last"``, ``"0"``, ``"1"``, ...).

    Each array has one row per row of ``df`` (same order) and ``hidden_size`` columns: "last" the
    pooler output (or the last layer's first token without a pooler), an integer layer the mean
    of its hidden states over the non-padding tokens (:func:`representation_name`). Pairs are
    read as ``pair_input`` says ("pair", as in fine-tuning; "premise": the first text alone, the
    authors' probe input and the workflow's default, ``study_a.probe.pair_input``).
    Runs the encoder in eval mode without gradients, in length-sorted batches with dynamic
    padding, in ``precision``: "fp32" (the authors': their feature pipeline ran the model in
    full precision), or "fp16" / "bf16" autocast on CUDA (the CPU always runs fp32).
    ``max_length`` is capped at the tokenizer's ``model_max_length``, as in fine-tuning (an
    XLM-R-architecture model takes two tokens fewer than its position embeddings).
    """
    import torch

    from langskew.devices import amp_dtype, autocast

    check_frame(df)
    if precision not in PRECISIONS:
        raise LangskewError(f"probe precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    check_pair_input(pair_input)
    if len(df) == 0:
        raise LangskewError("sentence_representations: empty data frame")
    max_length = int(min(max_length, tokenizer.model_max_length))
    encoder = encoder_of(model)
    n_hidden = int(encoder.config.num_hidden_layers) + 1
    names = _layer_names(list(layers), n_hidden)
    device = next(encoder.parameters()).device
    encoder.eval()
    order = length_order(df)
    chunks: dict[LayerSpec, list[np.ndarray]] = {name: [] for name in names}
    has_pooler = getattr(encoder, "pooler", None) is not None
    with torch.no_grad(), autocast(device, amp_dtype(device, precision)):
        for start in progress(range(0, len(df), batch_size), desc="representations", unit="batch"):
            batch = df.iloc[order[start:start + batch_size]]
            enc = encode_batch(tokenizer, batch, max_length, device, pair_input)
            out = encoder(**enc, output_hidden_states=True)
            for name in names:
                if name == "last":
                    vec = out.pooler_output if has_pooler else out.hidden_states[-1][:, 0]
                else:
                    vec = token_mean(out.hidden_states[name], enc["attention_mask"])
                chunks[name].append(vec.float().cpu().numpy())
    inverse = np.argsort(order)
    return {str(name): np.concatenate(parts)[inverse] for name, parts in chunks.items()}


def lid_classifier(C: float, n_languages: int):
    """The authors' multinomial L2 logistic regression of strength ``C`` on ``n_languages`` classes.

    scikit-learn's ``LogisticRegression`` is multinomial for three or more classes; for two
    it is binary, which equals the multinomial model at ``2 * C`` (module docstring).
    """
    from sklearn.linear_model import LogisticRegression

    if n_languages < 2:
        raise LangskewError(f"lid_probe: needs at least two languages, got {n_languages}")
    return LogisticRegression(C=2 * C if n_languages == 2 else C, max_iter=2000)  # L2 penalty (the default)


def lid_probe(X: np.ndarray, languages: Sequence[str], C: float = 1e-4, folds: int = 5,
              seed: int = 0, standardise: bool = False) -> dict[str, Any]:
    """Mean/sd (ddof=1) of stratified k-fold accuracy of the multinomial L2 logistic regression on ``X``:
    raw, or with ``standardise`` each column scaled to zero mean and unit variance on the training folds."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    y = np.asarray(languages)
    if len(y) != len(X):
        raise LangskewError(f"lid_probe: {len(X)} feature rows but {len(y)} languages")
    names, counts = np.unique(y, return_counts=True)
    if len(names) < 2:
        raise LangskewError(f"lid_probe: needs at least two languages, got {list(names)}")
    if counts.min() < folds:
        raise LangskewError(f"lid_probe: language {names[counts.argmin()]!r} has {counts.min()} examples, "
                            f"fewer than folds={folds}")
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = lid_classifier(C, len(names))
    if standardise:
        clf = make_pipeline(StandardScaler(), clf)
    scores = cross_val_score(clf, np.asarray(X, dtype=np.float64), y, cv=cv, scoring="accuracy")
    return {"mean": float(scores.mean()), "sd": float(scores.std(ddof=1)) if folds > 1 else 0.0,
            "folds": [float(s) for s in scores]}


PROBE_COLUMNS = ["layer", "representation", "features", "feature_norm", "C", "accuracy_mean", "accuracy_sd",
                 "n_examples", "n_languages"]


def probe_table(reps: Mapping[str, np.ndarray], languages: Sequence[str], C: float, folds: int,
                seed: int, sweep_features: str = "standardised", has_pooler: bool = False) -> pd.DataFrame:
    """One row per layer (:data:`PROBE_COLUMNS`): the representation read, the features the probe
    saw ("raw" for "last", as the paper; ``sweep_features`` for the sweep's layers), their scale
    (mean L2 norm of the raw rows), C, the CV accuracy's mean and sd, examples and languages."""
    if sweep_features not in SWEEP_FEATURES:
        raise LangskewError(f"probe sweep_features {sweep_features!r}: expected one of {', '.join(SWEEP_FEATURES)}")
    rows = []
    for layer, X in reps.items():
        features = "raw" if layer == "last" else sweep_features
        res = lid_probe(X, languages, C=C, folds=folds, seed=seed, standardise=features == "standardised")
        logger.info("LID probe layer %s (%s): %.4f +- %.4f", layer, features, res["mean"], res["sd"])
        rows.append({"layer": layer, "representation": representation_name(layer, has_pooler), "features": features,
                     "feature_norm": float(np.linalg.norm(np.asarray(X, dtype=np.float64), axis=1).mean()), "C": C,
                     "accuracy_mean": res["mean"], "accuracy_sd": res["sd"],
                     "n_examples": len(languages), "n_languages": len(set(languages))})
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def probe_model(job: Job, path: str, settings: Mapping[str, Any], model: Mapping[str, Any],
                num_labels: int | None) -> None:
    """The LID probe of the model at ``path`` on ``job.input.data``, written to ``job.output[0]``."""
    from langskew.devices import set_threads

    set_threads(job.threads)
    seed = int(settings["seed"])
    df = read_examples(job.input.data, REQUIRED_COLUMNS, settings["max_examples"], seed)
    tokenizer, classifier = load_for_inference(path, model, num_labels)
    reps = sentence_representations(classifier, tokenizer, df, settings["layers"], int(settings["batch_size"]),
                                    int(settings["max_length"]), str(settings["precision"]),
                                    str(settings.get("pair_input", PAIR_INPUTS[0])))
    has_pooler = getattr(encoder_of(classifier), "pooler", None) is not None
    table = probe_table(reps, df["language"].astype(str).tolist(), float(settings["C"]), int(settings["folds"]), seed,
                        str(settings.get("sweep_features", SWEEP_FEATURES[0])), has_pooler)
    write_csv(table, job.output[0])


def probe_job(job: Job, *, settings: Mapping[str, Any], model: Mapping[str, Any]) -> None:
    """Snakemake job: LID probe of a fine-tuned model on one test parquet.

    input: ``model`` (the fine-tuned model folder), ``data`` (test parquet). params:
    ``settings`` (``layers``, ``C``, ``folds``, ``max_examples``, ``batch_size``,
    ``precision``, ``max_length``, ``seed``; ``pair_input`` and ``sweep_features``, by default
    the schema's "premise" and "standardised"), ``model`` (the model entry: ``revision``,
    ``trust_remote_code``). output[0]: CSV of :data:`PROBE_COLUMNS`.
    """
    probe_model(job, str(job.input.model), settings, model, None)


def probe_base_job(job: Job, *, settings: Mapping[str, Any], model: Mapping[str, Any], num_labels: int) -> None:
    """Snakemake job: the same probe on the pretrained model (see :func:`probe_job`).

    The model is ``input.model`` when the workflow built it (a tiny model, loaded with its
    own head), else ``model["path"]`` (a hub id or local folder, loaded with a fresh head of
    ``num_labels`` classes).
    """
    built = getattr(job.input, "model", None) is not None
    probe_model(job, model_source(job.input, model), settings, model, None if built else num_labels)
