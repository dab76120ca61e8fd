import pytest

from pipeline.dataset.layout import DatasetLayout
from pipeline.io.atomic import atomic_write


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "shards" / "00000.parquet"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"first")
    assert target.read_bytes() == b"first"
    with pytest.raises(OSError, match="disk full"), atomic_write(target) as tmp:
        tmp.write_bytes(b"half of the sec")
        raise OSError("disk full")
    assert target.read_bytes() == b"first"
    assert list(target.parent.iterdir()) == [target]


def test_a_killed_writer_leaves_a_temporary_the_layout_finds(tmp_path):
    layout = DatasetLayout(tmp_path)
    context = atomic_write(layout.shard_path(4))
    tmp = context.__enter__()  # the process dies here: no exit, no rename, no clean-up
    tmp.write_bytes(b"half")
    assert layout.is_partial(4) and list(layout.temp_files()) == [tmp]
    assert not layout.shard_path(4).exists()
