import numpy as np
import pandas as pd
import pytest

from cryoposenet.errors import InputError
from cryoposenet.io import StackWriter, default_optics, load_particles, optics_for, read_star, write_star

STAR_30 = """
data_

loop_
_rlnImageName #1
_rlnAngleRot #2
_rlnAngleTilt #3
_rlnAnglePsi #4
_rlnOriginX #5
_rlnOriginY #6
_rlnDefocusU #7
_rlnDefocusV #8
_rlnDefocusAngle #9
_rlnVoltage #10
_rlnSphericalAberration #11
_rlnAmplitudeContrast #12
_rlnDetectorPixelSize #13
_rlnMagnification #14
000001@stacks/a.mrcs 10.0 20.0 30.0 1.5 -2.0 10000 9000 45 300 2.7 0.1 5.0 25000
000002@stacks/a.mrcs 11.0 21.0 31.0 0.0 1.0 12000 11000 10 300 2.7 0.1 5.0 25000
"""

STAR_31_TWO_GROUPS = """
# version 30001

data_optics

loop_
_rlnOpticsGroupName #1
_rlnOpticsGroup #2
_rlnVoltage #3
_rlnSphericalAberration #4
_rlnAmplitudeContrast #5
_rlnImagePixelSize #6
_rlnImageSize #7
_rlnImageDimensionality #8
opticsGroup1 1 300.0 2.7 0.1 2.0 16 2
opticsGroup2 2 200.0 1.4 0.07 2.0 16 2

# version 30001

data_particles

loop_
_rlnImageName #1
_rlnOpticsGroup #2
_rlnDefocusU #3
_rlnDefocusV #4
_rlnDefocusAngle #5
_rlnOriginXAngst #6
_rlnOriginYAngst #7
_rlnMicrographName #8
000001@s.mrcs 2 15000 14000 5 1.0 2.0 mic1.mrc
000002@s.mrcs 1 16000 15500 6 -1.0 0.5 mic2.mrc
000003@s.mrcs 2 17000 16000 7 0.0 0.0 mic2.mrc
"""


def test_relion30_reads_per_particle_optics_and_pixel_origins(tmp_path):
    (tmp_path / "p.star").write_text(STAR_30)
    t = read_star(tmp_path / "p.star")
    assert t.optics is None
    assert t.apix == pytest.approx(2.0)  # 5 µm × 10⁴ / 25000
    np.testing.assert_allclose(t.origins_A(), [[3.0, -4.0], [0.0, 2.0]])
    np.testing.assert_allclose(t.angles_deg()[1], [11, 21, 31])
    ctf = t.ctf_params()
    np.testing.assert_allclose(ctf["defocus_v_A"], [9000, 11000])
    np.testing.assert_allclose(ctf["phase_shift_deg"], [0, 0])
    idx, paths = t.image_refs()
    assert list(idx) == [0, 1]
    assert paths[0] == tmp_path / "stacks" / "a.mrcs"


def test_relion31_two_optics_groups_join_right(tmp_path):
    (tmp_path / "p.star").write_text(STAR_31_TWO_GROUPS)
    t = read_star(tmp_path / "p.star")
    ctf = t.ctf_params()
    np.testing.assert_allclose(ctf["voltage_kv"], [200, 300, 200])
    np.testing.assert_allclose(ctf["cs_mm"], [1.4, 2.7, 1.4])
    np.testing.assert_allclose(ctf["amplitude_contrast"], [0.07, 0.1, 0.07])
    np.testing.assert_allclose(t.origins_A(), [[1, 2], [-1, 0.5], [0, 0]])
    assert t.apix == 2.0
    assert not t.has_angles


def test_relion31_round_trip_keeps_columns_and_values(tmp_path):
    (tmp_path / "p.star").write_text(STAR_31_TWO_GROUPS)
    t = read_star(tmp_path / "p.star")
    parts = t.particles.copy()
    parts["rlnAngleRot"], parts["rlnAngleTilt"], parts["rlnAnglePsi"] = 1.0, 2.0, 3.0
    write_star(tmp_path / "out.star", parts, t.optics)
    t2 = read_star(tmp_path / "out.star")
    for col in ("rlnMicrographName", "rlnImageName", "rlnDefocusU"):
        assert list(t2.particles[col]) == list(t.particles[col])
    np.testing.assert_allclose(t2.ctf_params()["voltage_kv"], [200, 300, 200])
    np.testing.assert_allclose(t2.angles_deg(), [[1, 2, 3]] * 3)
    np.testing.assert_allclose(t2.column("rlnPhaseShift"), 0.0)
    assert len(t2.optics) == 2


def test_relion30_written_back_as_31(tmp_path):
    (tmp_path / "p.star").write_text(STAR_30)
    t = read_star(tmp_path / "p.star")
    write_star(tmp_path / "o.star", t.particles, optics_for(t, apix=t.apix, box=16))
    t2 = read_star(tmp_path / "o.star")
    assert t2.optics is not None and t2.apix == pytest.approx(2.0)
    np.testing.assert_allclose(t2.ctf_params()["defocus_u_A"], [10000, 12000])


def _write_stack(path, n, box, apix, seed=0):
    imgs = np.random.default_rng(seed).normal(size=(n, box, box)).astype(np.float32)
    with StackWriter(path, n, box, apix) as w:
        w[:] = imgs
    return imgs


def test_particle_stack_reads_rows_from_several_stacks(tmp_path):
    a = _write_stack(tmp_path / "a.mrcs", 3, 8, 1.5, seed=1)
    b = _write_stack(tmp_path / "b.mrcs", 2, 8, 1.5, seed=2)
    parts = pd.DataFrame({"rlnImageName": ["2@a.mrcs", "1@b.mrcs", "3@a.mrcs", "2@b.mrcs"]})
    write_star(tmp_path / "p.star", parts, default_optics(1.5, 8))
    stack = load_particles(tmp_path / "p.star")
    assert (len(stack), stack.box, stack.apix) == (4, 8, 1.5)
    got = stack[[3, 0, 2]]
    np.testing.assert_array_equal(got, np.stack([b[1], a[1], a[2]]))
    stack.close()


def test_datadir_overrides_base(tmp_path):
    (tmp_path / "data").mkdir()
    _write_stack(tmp_path / "data" / "a.mrcs", 1, 8, 1.0)
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": ["1@a.mrcs"]}), default_optics(1.0, 8))
    with pytest.raises(InputError, match="not found"):
        load_particles(tmp_path / "p.star")
    assert len(load_particles(tmp_path / "p.star", datadir=tmp_path / "data")) == 1


def test_stack_too_short_is_a_clear_error(tmp_path):
    _write_stack(tmp_path / "a.mrcs", 2, 8, 1.0)
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": ["5@a.mrcs"]}), default_optics(1.0, 8))
    with pytest.raises(InputError, match="holds 2 images"):
        load_particles(tmp_path / "p.star")


def test_star_pixel_size_wins_over_header(tmp_path, caplog):
    _write_stack(tmp_path / "a.mrcs", 1, 8, 3.0)
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": ["1@a.mrcs"]}), default_optics(1.0, 8))
    stack = load_particles(tmp_path / "p.star")
    assert stack.apix == 1.0
    assert "differs" in caplog.text


def test_missing_image_name_and_empty_file(tmp_path):
    (tmp_path / "x.star").write_text("data_\n\nloop_\n_rlnAngleRot #1\n1.0\n")
    with pytest.raises(InputError, match="rlnImageName"):
        read_star(tmp_path / "x.star")
    (tmp_path / "e.star").write_text("")
    with pytest.raises(InputError):
        read_star(tmp_path / "e.star")
