"""Small shared helpers (timing and benchmarks live in posenet.utils.benchmark)."""
