"""edge-mtl bench: measuring tools beside the engine, never torch.

``measure`` benchmarks models into the rows and document of ``schema`` (``cli``: ``edge-mtl
bench``; ``report`` renders them), timing through ``timing`` and ``stats``, with ``e2e`` for the
real pipeline and ``machine`` for where and at what memory cost. ``env`` describes the machine
(``edge-mtl env``); ``metrics`` holds the torch-free COCO mAP and accuracy/F1 that training and
quantization share. The torch eager baseline plugs in through ``baseline.Baseline``, handed in
by the composition root (``edge_mtl/cli.py``)."""
