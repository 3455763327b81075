"""Dataset category names -> model class indices, counting every name that could not be mapped.

Each loader has per-format defaults (KITTI's ``Pedestrian`` is our ``person``); a source's
``categories`` in the config overrides them. Mapping a name to ``ignore`` drops it on purpose.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from edge_mtl.config import IGNORE


class CategoryMap:
    """Resolve dataset category names to indices into ``classes`` (the model's class names).

    Lookups are case-insensitive. A name resolves through ``mapping`` (``defaults`` updated by
    ``overrides``; a name absent from it stands for itself) to a model class, or to ``ignore``.
    What ends at ``ignore`` is counted in ``ignored``; what ends at no model class (an unmapped
    name, or a default target this model lacks, e.g. KITTI ``Cyclist`` -> ``rider``) is counted
    in ``unknown``, keyed by the dataset's own name.
    """

    def __init__(
        self,
        classes: Iterable[str],
        defaults: Mapping[str, str] | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.classes = tuple(classes)
        self._index = {c.casefold(): i for i, c in enumerate(self.classes)}
        self._map = {k.casefold(): v for k, v in (defaults or {}).items()}
        self._map.update({k.casefold(): v for k, v in (overrides or {}).items()})
        self.unknown: Counter = Counter()
        self.ignored: Counter = Counter()

    def index(self, name: str, count: int = 1) -> int | None:
        """Model class index of dataset category ``name``, or None (and ``count`` is tallied)."""
        target = self._map.get(name.casefold(), name)
        i = None if target == IGNORE else self._index.get(target.casefold())
        if i is None and count:
            (self.ignored if target == IGNORE else self.unknown)[name] += count
        return i

    def tally(self, unmapped: Counter) -> None:
        """Count the unmapped categories of an image that was kept (name -> objects), once its
        objects are known to be good: a dropped image adds nothing to the report."""
        for name, n in unmapped.items():
            self.index(name, n)
