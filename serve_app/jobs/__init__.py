"""Batch job definitions, one module per pipeline, each exposing `JOB` (a BatchJob)."""
