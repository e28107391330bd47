"""Retrieval evaluation: CMC / mAP / mINP (Re-ID and text-to-image), re-ranking, query expansion.

Numpy only at import time; the JAX device path lives in `retext_jax.evaluation.device`.
"""

from retext_jax.evaluation.ranking import (
    evaluate_features,
    evaluate_rank,
    evaluate_text_features,
    evaluate_text_to_image,
    pairwise_distance,
)
from retext_jax.evaluation.rerank import alpha_query_expansion, k_reciprocal_rerank, re_ranking

__all__ = [
    "alpha_query_expansion",
    "evaluate_features",
    "evaluate_rank",
    "evaluate_text_features",
    "evaluate_text_to_image",
    "k_reciprocal_rerank",
    "pairwise_distance",
    "re_ranking",
]
