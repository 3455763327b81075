"""Datasets. ``synthetic`` and ``bdd`` are torch-free; ``dataset`` builds torch datasets."""
