"""Accuracy evaluations on real models (``python -m squash_ops.eval.minilm``)."""
