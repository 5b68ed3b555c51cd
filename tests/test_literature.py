"""literature/: the index and references.bib name the same papers, once each."""

from __future__ import annotations

import re

from detseg.bench import repo_root

FOLDER = repo_root() / "literature"


def test_index_and_bibtex_have_the_same_keys_once_each():
    index_keys = re.findall(r"^\| `([a-z0-9]+)` \|", (FOLDER / "README.md").read_text(), re.M)
    bib_keys = re.findall(r"^@\w+\{([a-z0-9]+),", (FOLDER / "references.bib").read_text(), re.M)
    assert len(index_keys) == len(set(index_keys))
    assert len(bib_keys) == len(set(bib_keys))
    assert sorted(index_keys) == sorted(bib_keys)
    assert len(index_keys) >= 39
