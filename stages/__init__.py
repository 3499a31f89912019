"""Thin DVC stage entry points: `python -m stages.<name> [--qf N] [--variant V]` (see dvc.yaml)."""
