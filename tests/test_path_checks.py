"""``bilevel.paths``' sentences, asked directly: an empty file option asks for a file name, an
input folder that is a file asks for the folder holding the data, and ``~`` is the home folder
for an input folder as for an output one."""

from __future__ import annotations

from pathlib import Path

import pytest

from bilevel.errors import UserError
from bilevel.paths import check_paths


def test_an_empty_file_option_asks_for_a_file_name() -> None:
    with pytest.raises(UserError, match=r"^--json is empty; give a file name\.$"):
        check_paths(files={"--json": ""})
    with pytest.raises(UserError, match=r"^--out is empty; give a folder name\.$"):
        check_paths(folders={"--out": ""})


def test_an_input_folder_that_is_a_file_asks_for_the_data_folder(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("mine\n")
    with pytest.raises(UserError, match="give the folder that holds the data") as refused:
        check_paths(inputs={"--data-dir": tmp_path / "a-file"})
    assert "(in " not in str(refused.value)
    with pytest.raises(UserError, match=r"\(in .*a-file, which is a file\)"):
        check_paths(inputs={"--data-dir": tmp_path / "a-file" / "mnist"})
    assert (tmp_path / "a-file").read_text() == "mine\n"


def test_a_tilde_in_an_input_folder_is_the_home_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "data").write_text("a file, not the data folder\n")
    with pytest.raises(UserError, match="is a file, not a folder"):
        check_paths(inputs={"--data-dir": "~/data"})
    check_paths(inputs={"--data-dir": "~/elsewhere"})  # a folder still to make: fine
