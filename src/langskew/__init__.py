"""langskew: reproduce and extend two studies of language imbalance in multilingual models.

Study A (``langskew.study_a``): class skew per language in multilingual fine-tuning.
Study B (``langskew.study_b``): language skew in pretraining with cloned languages.
Remedies for class skew per language, for any training script (``langskew.mitigation``,
docs/mitigation.md): per-language class weights, mask entropy maximisation, a language
adversary, per-language logit adjustment, group DRO, per-language balanced resampling; their
main entry points are importable from here too (loaded on first use, so that ``import
langskew`` stays light).
Shared helpers: ``langskew.io`` (atomic outputs, tables), ``langskew.checkpointing``
(resumable training), ``langskew.config`` (semantic config checks), ``langskew.workflow``
(thin glue for Snakemake scripts).
"""

__version__ = "0.2.0"

#: Names of ``langskew.mitigation`` also available as ``langskew.<name>``.
MITIGATION_EXPORTS = ("MitigationConfig", "MitigationLoss", "MitigationTrainer", "PerLanguageBalancedSampler",
                      "per_language_class_weights")


def __getattr__(name: str):
    if name in MITIGATION_EXPORTS:
        from langskew import mitigation

        return getattr(mitigation, name)
    raise AttributeError(f"module 'langskew' has no attribute {name!r}")
