"""faceatlas: UMAP maps of face-recognizer databases (cuML on CUDA GPUs, umap-learn on CPU)."""

__version__ = "0.10.0"
