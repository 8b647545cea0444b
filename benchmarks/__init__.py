"""Benchmarks of flask-tenant-cache: ratios to baselines timed in the same run."""
