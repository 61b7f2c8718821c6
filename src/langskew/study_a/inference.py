"""Running a sequence classifier on test examples: what the probe and SHAP stages share (Study A).

Which model a job loads (:func:`model_source`), loading it for inference
(:func:`load_for_inference`), checking the example frame (:func:`check_frame`) and drawing the
examples (:func:`subsample`, :func:`read_examples`).

Models are always loaded with ``AutoModelForSequenceClassification``, even a pretrained
checkpoint: its encoder is exactly the one fine-tuning starts from (BERT keeps its
pre-trained pooler, XLM-R has no pooler), whereas ``AutoModel`` would give XLM-R a
*randomly initialised* pooler.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from langskew.errors import LangskewError

#: Columns every example frame needs (the normalised schema's text columns and the language).
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


def subsample(df: pd.DataFrame, max_examples: int | None, seed: int) -> pd.DataFrame:
    """At most ``max_examples`` rows drawn at random (seeded); all rows when None."""
    if max_examples is None or len(df) <= int(max_examples):
        return df.reset_index(drop=True)
    return df.sample(n=int(max_examples), random_state=seed).reset_index(drop=True)


def read_examples(path: str, columns: Iterable[str], max_examples: int | None, seed: int) -> pd.DataFrame:
    """The examples of a test parquet: checked for ``columns``, then subsampled (see :func:`subsample`)."""
    df = pd.read_parquet(path)
    check_frame(df, columns)
    return subsample(df, max_examples, seed)


def model_source(inputs: Any, model: Mapping[str, Any]) -> str:
    """The model a job loads: ``input.model`` when the rule has one (a folder the workflow built),
    else the model entry's ``path`` (a hub id or a local folder)."""
    path = getattr(inputs, "model", None)
    if path is None:
        path = model.get("path")
    if not path:
        raise LangskewError("neither input.model nor the model entry's 'path' is given")
    return str(path)


def load_for_inference(path: str, model_spec: Mapping[str, Any] | None = None,
                       num_labels: int | None = None):
    """(tokenizer, classifier) from a local dir or hub id, on the chosen device, in eval mode.

    ``model_spec``: the model entry (``revision``, ``trust_remote_code``); ``num_labels``: the
    size of a fresh classification head (None keeps the checkpoint's).
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from langskew.devices import pick_device

    spec = dict(model_spec or {})
    kwargs = {"revision": spec.get("revision"), "trust_remote_code": bool(spec.get("trust_remote_code", False))}
    tokenizer = AutoTokenizer.from_pretrained(str(path), **kwargs)
    if num_labels is not None:
        kwargs["num_labels"] = int(num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)
    return tokenizer, model.to(pick_device()).eval()

