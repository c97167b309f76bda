from pathlib import Path

import pytest

from lipt_core.files import replacing, write_bytes

from helpers import new_file_mode


def test_write_bytes_replaces_the_target_with_a_new_files_mode(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    write_bytes(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    # tempfile.mkstemp would have made it 0600: the rename must not narrow the permissions.
    assert target.stat().st_mode & 0o777 == new_file_mode()
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_failed_write_leaves_the_target_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"keep me")
    with pytest.raises(RuntimeError), replacing(target) as temp:
        temp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_the_temporary_file_is_hidden_beside_the_target_until_the_end(tmp_path: Path) -> None:
    target = tmp_path / "model.onnx"
    with replacing(target) as temp:
        assert temp.parent == tmp_path and temp.name.startswith(".model.onnx.")
        assert temp.exists() and temp.stat().st_size == 0 and not target.exists()
        temp.write_bytes(b"x")
    assert target.read_bytes() == b"x" and not temp.exists()


def test_an_unwritable_folder_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_bytes(tmp_path / "missing" / "out.bin", b"x")
