"""mmfast's kernel benchmarks (pytest-benchmark); `python -m pytest bench` runs them."""
