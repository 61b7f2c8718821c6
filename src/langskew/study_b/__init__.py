"""Study B: language imbalance in pretraining, with cloned languages and a real EN+FR pair.

Data side (this package's ``corpus``, ``tokenizer``, ``languages``, ``grid``, ``report``):
corpus per base language -> one SentencePiece BPE tokenizer per language -> memmap token
streams (+ parallel sentences) -> per-run language mixtures and batches -> report tables.
Model side: the GPT (``model``), pretraining (``pretrain``), held-out perplexity
(``perplexity``), representation and gradient alignment (``alignment``) and the monolingual
scaling fits (``fit``).
"""
