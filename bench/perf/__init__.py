"""Throughput and latency benchmarks: python -m bench NAME, NAME a module here with main()."""
