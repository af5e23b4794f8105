"""Shared low-level utilities of pamtri: errors, atomic files, typed configs, checkpoints, runtime."""
