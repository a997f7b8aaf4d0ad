"""ponder.align: inference-aware training signals from search results.

So far: `metrics.pass_at_k`, the unbiased pass@k estimator (Chen et al.). The estimators of the
align issue (PKPO, maj@k LOO, BoN-RL weights, CTRL) are still to come; align reads
SearchResults and reward vectors, never the scheduler or the KV cache.
"""
