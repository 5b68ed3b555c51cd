"""Scripts with the same file name in different folders load as different modules."""

from __future__ import annotations

from detseg.scripts import load_script


def test_same_named_scripts_stay_apart(tmp_path):
    for folder, value in (("01_a", 1), ("05_b", 5)):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / f"helper_unique_to_{folder}.py").write_text(f"VALUE = {value}\n")
        (tmp_path / folder / "train.py").write_text(
            f"from helper_unique_to_{folder} import VALUE\n"
        )
    first = load_script(tmp_path / "01_a", "train")
    second = load_script(tmp_path / "05_b", "train")
    assert (first.VALUE, second.VALUE) == (1, 5)
    assert first.__name__ == "01_a__train" and second.__name__ == "05_b__train"
    assert load_script(tmp_path / "01_a", "train") is first
