"""Datasets. ``synthetic`` (scenes sampled in ``synthetic_spec``) and ``bdd`` are torch-free;
``dataset`` builds torch datasets."""
