"""Orchestration of PAMTRI's two stages: CLI, configs, caches, two-stage inference, demo, benchmarks."""
