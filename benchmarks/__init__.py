"""Benchmarks of HumanSD-rebuild: one entry point, ``python -m benchmarks <name> [options]`` (see README.md)."""
