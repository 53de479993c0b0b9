"""Stage 4 — spot transcriptome from image features (DeepSpot-style set model with uncertainty).

The gene panel is :mod:`spotwhisper.genes`, the set trunk :mod:`spotwhisper.setmodel` (shared with the
aligned image head)."""
