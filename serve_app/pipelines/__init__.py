"""Pipeline glue, written once: async functions that take models as awaitables
(a model-tier call in Serve, `LocalBatcher` in batch jobs and tests), and each
pipeline's spec (parameters and models). No Ray, no FastAPI."""
