"""ponder's own torch backend: the Engine (HF weights in a paged model), its scheduler, paged KV
cache with fork and copy-on-write, model runner and sampler, and its SearchContext
(`context.EngineContext`). Import `Engine` from `ponder.engine`."""
