import pytest
import torch

from gnnprune.io import OutputExistsError, atomic_torch_save, atomic_write_json, check_new_folder, safe_torch_load


def test_atomic_writes_leave_no_temp_files(tmp_path):
    atomic_write_json(tmp_path / "a" / "m.json", {"x": 1})
    atomic_torch_save({"w": torch.ones(3)}, tmp_path / "a" / "w.pt")
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["m.json", "w.pt"]
    assert torch.equal(safe_torch_load(tmp_path / "a" / "w.pt")["w"], torch.ones(3))


def test_truncated_checkpoint_gives_one_clear_error(tmp_path):
    path = tmp_path / "w.pt"
    atomic_torch_save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match=str(path)):
        safe_torch_load(path)


def test_check_new_folder(tmp_path):
    assert check_new_folder(tmp_path / "new") == tmp_path / "new"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(OutputExistsError):
        check_new_folder(tmp_path / "full")


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        atomic_write_json(tmp_path / "m.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "m.json").stat().st_mode) == 0o644
