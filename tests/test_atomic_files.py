"""``bilevel.files``: an atomic write makes the folders its file goes in, and only a hidden
regular file named like a cut-short write counts as one (a link of that name is a user's)."""

from __future__ import annotations

from pathlib import Path

from bilevel.files import atomic_write_text, is_cut_write


def test_a_write_makes_the_folders_its_file_goes_in(tmp_path: Path) -> None:
    path = tmp_path / "new" / "deeper" / "results.json"
    atomic_write_text(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary left


def test_only_a_hidden_regular_file_is_taken_for_a_cut_short_write(tmp_path: Path) -> None:
    ours = tmp_path / ".last.pt.abc12345.partial"
    ours.write_bytes(b"cut")
    assert is_cut_write(ours)
    target = tmp_path / "mine.txt"
    target.write_text("mine\n")
    link = tmp_path / ".mine.abc12345.partial"
    link.symlink_to(target)  # a link to a file: is_file() follows it, yet it is the user's
    assert not is_cut_write(link)
    (tmp_path / "draft.partial").write_text("mine\n")  # not hidden: the user's
    assert not is_cut_write(tmp_path / "draft.partial")
