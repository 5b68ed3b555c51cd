"""Every link from a Markdown file of the repository to a file inside it resolves."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from detseg.bench import repo_root

ROOT = repo_root()
# [text](target) and ![alt](target); the target stops at whitespace or ")"; `<...>` targets too
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"```.*?```|`[^`\n]*`", re.DOTALL)


def markdown_files() -> list[Path]:
    """The Markdown files git tracks or would track (untracked but not ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return sorted(ROOT / name for name in listed if (ROOT / name).is_file())


def local_links(text: str) -> list[str]:
    """Link targets that point inside the repository (no scheme, no bare #anchor)."""
    text = CODE_SPAN.sub("", text)
    targets = []
    for target in LINK.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith("#"):
            continue
        targets.append(target.split("#", 1)[0].split("?", 1)[0])
    return targets


def test_link_pattern_on_hand_written_markdown():
    text = (
        "See [the lesson](05_unet_segmentation/1_unet_salt.ipynb#setup), ![fig](assets/iou.png),\n"
        "[web](https://example.org/x), [anchor](#top), [mail](mailto:a@b.c), "
        "`[not a link](in/code.md)`\n```\n[also not](fenced.md)\n```\n[dir](literature/)"
    )
    assert local_links(text) == [
        "05_unet_segmentation/1_unet_salt.ipynb",
        "assets/iou.png",
        "literature/",
    ]


@pytest.mark.parametrize("markdown", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_local_link_resolves(markdown):
    broken = [
        target
        for target in local_links(markdown.read_text(encoding="utf-8"))
        if not (markdown.parent / target).exists()
    ]
    assert broken == [], f"{markdown.relative_to(ROOT)}: links to missing files: {broken}"
