"""Ingress deployments and typed builders, one module per endpoint (application)."""
