"""Language-identification (LID) probe on sentence representations (Study A, Table 4).

A strongly L2-regularised logistic regression (C = 1e-4) predicts an example's language
from its sentence representation; the mean 5-fold cross-validated accuracy measures how
separated the languages are in the model's latent space (higher = more separated).

Sentence representation (docs/studies.md): the last layer's *pooler output* when the encoder has
a pooler (mBERT), else the first-token vector of the last layer (XLM-R, whose
classification head has no pooler). Integer layers (0 = embeddings) and ``"all"`` give the
first-token vector of each hidden state, for a layer-wise view.

Features are used raw (no standardisation), like the paper: standardising would rescale
every dimension to unit variance and change what C = 1e-4 means.

Models are always loaded with ``AutoModelForSequenceClassification`` even for the base
checkpoint: its encoder is exactly the one fine-tuning starts from (BERT keeps its
pre-trained pooler, XLM-R has no pooler), whereas ``AutoModel`` would give XLM-R a
*randomly initialised* pooler. The (random) classification head is never used.
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from langskew.devices import pick_device
from langskew.errors import LangskewError
from langskew.io import write_csv

log = logging.getLogger(__name__)

LayerSpec = str | int
REQUIRED_COLUMNS = ("language", "text", "text_pair")


def check_frame(df: pd.DataFrame, columns: Iterable[str] = REQUIRED_COLUMNS) -> None:
    """Raise :class:`LangskewError` naming the first missing column or a mixed pair/single frame."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise LangskewError(f"data frame lacks column {missing[0]!r} (has {list(df.columns)})")
    if "text_pair" in df.columns:
        has_pair = df["text_pair"].notna()
        if has_pair.any() and not has_pair.all():
            raise LangskewError("column 'text_pair' is null for some rows and set for others; "
                                "a dataset is either a pair task or a single-text task")


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


def encode_batch(tokenizer: Any, batch: pd.DataFrame, max_length: int, device: str) -> dict:
    """Tokenise a batch (as pairs when ``text_pair`` is set), padded to its longest row."""
    texts = batch["text"].astype(str).tolist()
    pairs = batch["text_pair"].tolist() if "text_pair" in batch.columns else [None] * len(texts)
    pairs = None if pairs[0] is None or pd.isna(pairs[0]) else [str(p) for p in pairs]
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def length_order(df: pd.DataFrame) -> np.ndarray:
    """Row order by character length (less padding per batch); invert with ``argsort``."""
    lengths = df["text"].astype(str).str.len()
    if "text_pair" in df.columns:
        lengths = lengths + df["text_pair"].fillna("").astype(str).str.len()
    return np.argsort(lengths.to_numpy(), kind="stable")


def sentence_representations(model: Any, tokenizer: Any, df: pd.DataFrame,
                             layers: Sequence[LayerSpec] = ("last",), batch_size: int = 64,
                             max_length: int = 512) -> dict[str, np.ndarray]:
    """Sentence vectors per layer, keyed by layer name (``"last"``, ``"0"``, ``"1"``, ...).

    Each array has one row per row of ``df`` (same order) and ``hidden_size`` columns.
    Runs the encoder in eval mode without gradients, in length-sorted batches with dynamic
    padding (autocast fp16 on CUDA).
    """
    import torch
    from tqdm.auto import tqdm

    check_frame(df)
    if len(df) == 0:
        raise LangskewError("sentence_representations: empty data frame")
    encoder = encoder_of(model)
    n_hidden = int(encoder.config.num_hidden_layers) + 1
    names = _layer_names(list(layers), n_hidden)
    device = next(encoder.parameters()).device.type
    encoder.eval()
    order = length_order(df)
    chunks: dict[LayerSpec, list[np.ndarray]] = {name: [] for name in names}
    has_pooler = getattr(encoder, "pooler", None) is not None
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=device == "cuda"):
        for start in tqdm(range(0, len(df), batch_size), desc="representations", unit="batch"):
            batch = df.iloc[order[start:start + batch_size]]
            out = encoder(**encode_batch(tokenizer, batch, max_length, device), output_hidden_states=True)
            for name in names:
                if name == "last":
                    vec = out.pooler_output if has_pooler else out.hidden_states[-1][:, 0]
                else:
                    vec = out.hidden_states[name][:, 0]
                chunks[name].append(vec.float().cpu().numpy())
    inverse = np.argsort(order)
    return {str(name): np.concatenate(parts)[inverse] for name, parts in chunks.items()}


def lid_probe(X: np.ndarray, languages: Sequence[str], C: float = 1e-4, folds: int = 5,
              seed: int = 0) -> dict[str, Any]:
    """Mean/sd (ddof=1) of stratified k-fold accuracy of an L2 logistic regression on raw ``X``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

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
    clf = LogisticRegression(C=C, max_iter=2000)  # L2 penalty (the default)
    scores = cross_val_score(clf, np.asarray(X, dtype=np.float64), y, cv=cv, scoring="accuracy")
    return {"mean": float(scores.mean()), "sd": float(scores.std(ddof=1)) if folds > 1 else 0.0,
            "folds": [float(s) for s in scores]}


def subsample(df: pd.DataFrame, max_examples: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_examples`` rows drawn at random (seeded); all rows when None."""
    if max_examples is None or len(df) <= int(max_examples):
        return df.reset_index(drop=True)
    return df.sample(n=int(max_examples), random_state=seed).reset_index(drop=True)


def load_for_inference(path: str, model_spec: Mapping[str, Any] | None = None,
                       num_labels: int | None = None):
    """(tokenizer, classifier) from a local dir or hub id, on the chosen device, in eval mode."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    spec = dict(model_spec or {})
    kwargs = {"revision": spec.get("revision"), "trust_remote_code": bool(spec.get("trust_remote_code", False))}
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    if num_labels is not None:
        kwargs["num_labels"] = int(num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    return tokenizer, model.to(pick_device()).eval()


def param(params: Any, key: str, default: Any = None) -> Any:
    """A rule parameter: ``params.<key>`` if set, else ``params.settings[key]``, else ``default``.

    Rules may pass settings flat (``params.C``) or grouped in one dict (``params.settings``).
    """
    value = getattr(params, key, None)
    if value is None:
        value = dict(getattr(params, "settings", None) or {}).get(key)
    return default if value is None else value


def model_source(input: Any, params: Any) -> tuple[str, dict]:
    """``input.model`` (a fine-tuned dir) if the rule has one, else ``params.model["path"]``."""
    spec = dict(getattr(params, "model", None) or {})
    path = getattr(input, "model", None)
    if path is None:
        path = spec.get("path")
    if not path:
        raise LangskewError("probe/shap job: neither input.model nor params.model['path'] is given")
    return str(path), spec


def probe_table(reps: Mapping[str, np.ndarray], languages: Sequence[str], C: float, folds: int,
                seed: int) -> pd.DataFrame:
    """One row per layer: layer, accuracy_mean, accuracy_sd, n_examples, n_languages."""
    rows = []
    for layer, X in reps.items():
        res = lid_probe(X, languages, C=C, folds=folds, seed=seed)
        log.info("LID probe layer %s: %.4f +- %.4f", layer, res["mean"], res["sd"])
        rows.append({"layer": layer, "accuracy_mean": res["mean"], "accuracy_sd": res["sd"],
                     "n_examples": len(languages), "n_languages": len(set(languages))})
    return pd.DataFrame(rows)


def probe_job(input, output, params, threads=1, log=None, **_) -> None:
    """Snakemake job: LID probe of one model on one test parquet.

    input: ``model`` (fine-tuned model dir; optional), ``data`` (test parquet).
    params (flat or inside ``params.settings``, see :func:`param`): ``model`` (registry
    entry; its ``path`` is used when input.model is absent), ``layers``, ``C``, ``folds``,
    ``max_examples``, ``batch_size``, ``max_length``, ``seed``, ``num_labels`` (optional). output[0]: CSV (layer, accuracy_mean, accuracy_sd,
    n_examples, n_languages).
    """
    import torch

    torch.set_num_threads(max(1, int(threads or 1)))
    path, spec = model_source(input, params)
    seed = int(param(params, "seed", 0))
    df = pd.read_parquet(input.data)
    check_frame(df)
    df = subsample(df, param(params, "max_examples"), seed)
    num_labels = None if getattr(input, "model", None) is not None else param(params, "num_labels")
    tokenizer, model = load_for_inference(path, spec, num_labels)
    reps = sentence_representations(model, tokenizer, df, param(params, "layers", ["last"]),
                                    int(param(params, "batch_size", 64)), int(param(params, "max_length", 512)))
    table = probe_table(reps, df["language"].astype(str).tolist(), float(param(params, "C", 1e-4)),
                        int(param(params, "folds", 5)), seed)
    write_csv(table, output[0])
