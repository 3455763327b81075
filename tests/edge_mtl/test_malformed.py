"""Bad-entry bookkeeping (edge_mtl.data.malformed): raise, or count and summarise."""

from pathlib import Path

import pytest

from edge_mtl.data.malformed import BadEntries, EntryError
from edge_mtl.runtime.errors import InputError


def test_bad_entries_raise_or_count():
    bad = BadEntries()
    with pytest.raises(InputError, match=r"^/d/labels.txt:12: degenerate box$"):
        bad.add(Path("/d/labels.txt"), 12, "degenerate box")
    bad = BadEntries(skip=True)
    assert bad.summary() == ""
    bad.add(Path("/d/labels.json"), "frame 3", KeyError("name"))
    assert (
        bad.summary()
        == "skipped 1 bad entry (labels.json: frame 3: malformed entry (KeyError('name')))"
    )
    for i in range(4):
        bad.add(Path("/d/images") / f"{i}.jpg", None, EntryError("empty image file"))
    assert bad.count == 5
    assert bad.summary() == (
        "skipped 5 bad entries (labels.json: frame 3: malformed entry (KeyError('name')); "
        "0.jpg: empty image file; 1.jpg: empty image file; first 3 shown)"
    )
    assert bad.images_dropped == 0


def test_bad_objects_count_their_image_once():
    bad = BadEntries(skip=True)
    bad.add(Path("/d/7.txt"), 2, "degenerate box", image=Path("/d/7.png"))
    assert (
        bad.summary()
        == "skipped 1 bad entry (7.txt:2: degenerate box); 1 image dropped for bad objects"
    )
    bad.add(Path("/d/7.txt"), 5, "degenerate box", image=Path("/d/7.png"))
    bad.add(Path("/d/8.txt"), 1, "degenerate box", image=Path("/d/8.png"))
    bad.add(Path("/d/9.png"), None, "empty image file")
    assert bad.count == 4 and bad.images_dropped == 2
    assert bad.summary().endswith("; first 3 shown); 2 images dropped for bad objects")
    with pytest.raises(InputError, match=r"^/d/7.txt:2: degenerate box$"):
        BadEntries().add(Path("/d/7.txt"), 2, "degenerate box", image=Path("/d/7.png"))
