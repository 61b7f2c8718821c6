"""Class weights: the paper's published per-language values and the global scheme."""

import numpy as np
import pandas as pd
import pytest

from langskew.errors import LangskewError
from langskew.weights import class_weight_table, class_weights, example_weights


def _rows(counts_by_lang: dict[str, list[int]]):
    labels, langs = [], []
    for lang, counts in counts_by_lang.items():
        for c, n in enumerate(counts):
            labels += [c] * n
            langs += [lang] * n
    return np.array(labels), np.array(langs, dtype=object)


def test_xnli_published_per_language_weights():
    labels, langs = _rows({"en": [43632, 87266, 130899], "fr": [130899, 87266, 43632]})
    w = class_weights(labels, langs, 3, "per_language")
    np.testing.assert_allclose(w["en"], [2.0, 1.0, 0.667], atol=1e-3)
    np.testing.assert_allclose(w["fr"], [0.667, 1.0, 2.0], atol=1e-3)


def test_amazon_published_per_language_weights():
    fwd = [39999, 31999, 23999, 15999, 7999]
    spec = {lang: fwd for lang in ("de", "en", "zh")} | {lang: fwd[::-1] for lang in ("es", "fr", "ja")}
    labels, langs = _rows(spec)
    w = class_weights(labels, langs, 5, "per_language")
    for lang in ("de", "en", "zh"):
        np.testing.assert_allclose(w[lang], [0.6, 0.75, 1.0, 1.5, 3.0], atol=1e-3)
    for lang in ("es", "fr", "ja"):
        np.testing.assert_allclose(w[lang], [3.0, 1.5, 1.0, 0.75, 0.6], atol=1e-3)


def test_global_weights_one_when_balanced_overall_and_not_otherwise():
    labels, langs = _rows({"en": [10, 20, 30], "fr": [30, 20, 10]})
    w = class_weights(labels, langs, 3, "global")
    np.testing.assert_allclose(w["en"], [1, 1, 1])
    np.testing.assert_allclose(w["fr"], w["en"])
    labels, langs = _rows({"en": [10, 20, 30], "fr": [10, 20, 30]})
    w = class_weights(labels, langs, 3, "global")
    np.testing.assert_allclose(w["en"], [2.0, 1.0, 2 / 3])
    assert not np.allclose(w["fr"], 1)


def test_none_scheme_is_ones():
    labels, langs = _rows({"en": [1, 5, 9]})
    np.testing.assert_array_equal(class_weights(labels, langs, 3, "none")["en"], [1, 1, 1])


def test_missing_class_in_language_names_language_and_label():
    labels, langs = _rows({"en": [5, 5, 5], "fr": [5, 0, 5]})
    with pytest.raises(LangskewError, match=r"'fr'.*label 1"):
        class_weights(labels, langs, 3, "per_language")


def test_unknown_scheme():
    with pytest.raises(LangskewError, match="inverse"):
        class_weights([0, 1], ["en", "en"], 2, "inverse")


def test_example_weights_and_table():
    labels, langs = _rows({"en": [1, 2, 3], "fr": [3, 2, 1]})
    w = class_weights(labels, langs, 3, "per_language")
    ex = example_weights(labels, langs, w)
    assert ex[0] == pytest.approx(2.0) and ex[-1] == pytest.approx(2.0)
    # per-language weighting equalises each language's total weight per class
    for lang in ("en", "fr"):
        totals = [ex[(langs == lang) & (labels == c)].sum() for c in range(3)]
        np.testing.assert_allclose(totals, [2, 2, 2])
    table = class_weight_table(pd.DataFrame({"language": langs, "label": labels}), 3,
                               ["entailment", "neutral", "contradiction"])
    assert list(table.columns[:4]) == ["scheme", "language", "label", "weight"]
    assert len(table) == 3 * 2 * 3
    row = table.query("scheme == 'per_language' and language == 'fr' and label == 0")
    assert row["weight"].item() == pytest.approx(2 / 3)
    assert row["label_name"].item() == "entailment"
