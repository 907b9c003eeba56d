"""Small shared helpers (timing and benchmarks live in posenet.bench.common)."""
