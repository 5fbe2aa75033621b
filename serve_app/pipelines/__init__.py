"""Pipeline glue, written once: async functions that take models as awaitables
(`handle.remote` in Serve, `LocalBatcher` in batch jobs and tests). No Ray, no FastAPI."""
