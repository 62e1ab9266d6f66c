import mrcfile
import numpy as np
import pytest

from cryoposenet.errors import InputError
from cryoposenet.io import StackWriter, read_map, write_map
from cryoposenet.io.mrc import header_apix, open_stack, stack_shape


def test_map_round_trip_keeps_values_and_pixel_size(tmp_path):
    rng = np.random.default_rng(0)
    vol = rng.normal(size=(12, 12, 12)).astype(np.float32)
    write_map(tmp_path / "m.mrc", vol, apix=1.37)
    back, apix = read_map(tmp_path / "m.mrc")
    np.testing.assert_array_equal(back, vol)
    assert apix == pytest.approx(1.37, abs=1e-5)
    # no temporary files left behind by the atomic write
    assert [p.name for p in tmp_path.iterdir()] == ["m.mrc"]


def test_map_axis_order_is_zyx(tmp_path):
    vol = np.zeros((8, 8, 8), np.float32)
    vol[1, 2, 3] = 1.0  # z=1, y=2, x=3
    write_map(tmp_path / "m.mrc", vol, apix=1.0)
    with mrcfile.open(tmp_path / "m.mrc") as mrc:
        assert (mrc.header.nx, mrc.header.ny, mrc.header.nz) == (8, 8, 8)
        assert mrc.data[1, 2, 3] == 1.0


def test_stack_writer_streams_and_is_a_stack(tmp_path):
    rng = np.random.default_rng(1)
    imgs = rng.normal(size=(10, 16, 16)).astype(np.float32)
    with StackWriter(tmp_path / "s.mrcs", 10, 16, apix=2.5) as w:
        w[0:4] = imgs[:4]
        w[4:10] = imgs[4:]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    mrc = open_stack(tmp_path / "s.mrcs")
    try:
        assert stack_shape(mrc) == (10, 16, 16)
        assert mrc.header.ispg == 0
        assert isinstance(mrc.data, np.memmap)
        np.testing.assert_array_equal(mrc.data[7], imgs[7])
    finally:
        mrc.close()
    assert header_apix(tmp_path / "s.mrcs") == pytest.approx(2.5)


def test_failed_stack_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), StackWriter(tmp_path / "s.mrcs", 4, 8, apix=1.0) as w:
        w[0] = np.ones((8, 8), np.float32)
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_and_missing_maps_raise_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_map(tmp_path / "nope.mrc")
    (tmp_path / "junk.mrc").write_bytes(b"not an mrc file at all" * 3)
    with pytest.raises(InputError, match="junk.mrc"):
        read_map(tmp_path / "junk.mrc")


def test_outputs_get_the_usual_file_mode(tmp_path):
    import os

    write_map(tmp_path / "m.mrc", np.zeros((4, 4, 4), np.float32), apix=1.0)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m.mrc").stat().st_mode & 0o777 == 0o666 & ~mask
