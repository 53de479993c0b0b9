"""Stage 4 — spot transcriptome from image features (DeepSpot-style set model with uncertainty)."""
