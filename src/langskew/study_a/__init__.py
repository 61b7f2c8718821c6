"""Study A: language-specific class imbalance in multilingual fine-tuning (Jung & van der Plas, 2024)."""
