"""langskew.io: outputs appear whole or not at all, with the permissions of an ordinary open()."""
import os
import stat

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from langskew import io  # noqa: E402


@pytest.fixture(params=[0o002, 0o027, 0o077], ids=["umask002", "umask027", "umask077"])
def umask(request):
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _writers(tmp_path):
    df = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    return {
        "json": lambda p: io.write_json({"x": 1}, p),
        "parquet": lambda p: io.write_parquet(df, p),
        "csv": lambda p: io.write_csv(df, p),
        "png": lambda p: io.save_figure(fig, p),
        "md": lambda p: io.write_table(df, tmp_path / "ignored.csv", p),
    }


def test_files_get_the_mode_open_would_give(tmp_path, umask):
    for ext, write in _writers(tmp_path).items():
        path = tmp_path / "out" / f"file.{ext}"
        write(path)
        assert _mode(path) == 0o666 & ~umask, ext
        # the reference: a file made by open() under the same umask
        ref = tmp_path / f"ref.{ext}"
        ref.write_text("")
        assert _mode(path) == _mode(ref), ext
    assert _mode(tmp_path / "out") == 0o777 & ~umask


def test_folders_get_the_mode_mkdir_would_give(tmp_path, umask):
    target = tmp_path / "deep" / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "weights.bin").write_bytes(b"123")
        (tmp / "sub").mkdir()
    assert _mode(target) == 0o777 & ~umask
    assert _mode(target / "sub") == 0o777 & ~umask
    assert _mode(target / "weights.bin") == 0o666 & ~umask
    (tmp_path / "ref").mkdir()
    assert _mode(target) == _mode(tmp_path / "ref")


def test_umask_is_left_unchanged(umask):
    assert io.current_umask() == umask
    assert os.umask(umask) == umask


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "table.csv"
    io.write_csv(pd.DataFrame({"a": [1]}), path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with io.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.csv"]


def test_failed_folder_write_leaves_the_old_folder(tmp_path):
    target = tmp_path / "model"
    with io.atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("new")
            raise RuntimeError("boom")
    assert (target / "a.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
