"""Plain torch/numpy models (SAM, CLIP, AlignSAM, RAIS, IVOS-W). Nothing here imports Prefect or Ray."""
