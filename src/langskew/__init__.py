"""langskew: reproduce and extend two studies of language imbalance in multilingual models.

Study A (``langskew.study_a``): class skew per language in multilingual fine-tuning.
Study B (``langskew.study_b``): language skew in pretraining with cloned languages.
Shared helpers: ``langskew.io`` (atomic outputs, tables), ``langskew.checkpointing``
(resumable training), ``langskew.config`` (semantic config checks), ``langskew.workflow``
(thin glue for Snakemake scripts).
"""

__version__ = "0.2.0"
