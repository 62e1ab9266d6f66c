"""Streamed particle images: positional reads, a background loader, memory flat in the stack size."""

import warnings
from pathlib import Path

import mrcfile
import numpy as np
import pandas as pd
import pytest
import torch

from cryoposenet.errors import InputError
from cryoposenet.io import StackWriter, default_optics, load_particles, write_star
from cryoposenet.training.data import Prefetcher, StackImages, sample_images
from cryoposenet.training.inputs import particle_data
from cryoposenet.training.train import ParticleData, TrainConfig, train
from datasets import write_dataset


def _two_stacks(folder: Path, n: int = 16, m: int = 50) -> tuple[Path, np.ndarray]:
    """A STAR file naming images of two stacks, rows interleaved; returns it and the images in row order."""
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=(m, n, n)).astype(np.float32) for _ in range(2))
    for name, arr in (("a", a), ("b", b)):
        with StackWriter(folder / f"{name}.mrcs", m, n, 2.0) as w:
            w[:] = arr
    names, images = [], []
    for i in range(m):
        names += [f"{i + 1}@a.mrcs", f"{m - i}@b.mrcs"]
        images += [a[i], b[m - 1 - i]]
    write_star(folder / "p.star", pd.DataFrame({"rlnImageName": names}), default_optics(2.0, n))
    return folder / "p.star", np.stack(images)


def test_rows_read_from_several_stacks_in_any_order_with_repeats(tmp_path):
    star, truth = _two_stacks(tmp_path)
    stack = load_particles(star)
    rows = np.random.default_rng(1).integers(len(truth), size=300)  # repeats, both stacks, any order
    np.testing.assert_array_equal(stack[rows], truth[rows])
    np.testing.assert_array_equal(stack[np.arange(len(truth))], truth)
    images = StackImages(stack)
    assert images.shape == truth.shape and len(images) == len(truth)
    torch.testing.assert_close(images[torch.tensor([5, 0, 5])], torch.from_numpy(truth[[5, 0, 5]]))


def test_a_batch_with_nan_is_one_clear_input_error(tmp_path):
    data = np.ones((4, 16, 16), np.float32)
    data[2, 3, 4] = np.inf
    with warnings.catch_warnings(), mrcfile.new(tmp_path / "s.mrcs") as m:
        warnings.simplefilter("ignore")  # mrcfile warns about the Inf planted on purpose
        m.set_data(data)
    names = [f"{i + 1}@s.mrcs" for i in range(4)]
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": names}), default_optics(2.0, 16))
    images = StackImages(load_particles(tmp_path / "p.star"))
    assert images[torch.tensor([0, 1, 3])].shape == (3, 16, 16)
    with pytest.raises(InputError, match=r"NaN or Inf.*3@s\.mrcs") as err:
        images[torch.tensor([1, 2])]
    assert "\n" not in str(err.value)


def test_prefetcher_returns_each_key_once_and_raises_a_reads_error():
    calls = []

    def read(k: int) -> int:
        calls.append(k)
        if k == 3:
            raise InputError("bad batch")
        return k * 10

    with Prefetcher(read) as loader:
        assert [loader.get(k, k + 1) for k in range(3)] == [0, 10, 20]
        with pytest.raises(InputError, match="bad batch"):
            loader.get(3, None)
    assert sorted(calls) == [0, 1, 2, 3]  # the first read (now) and the next (ahead) may overlap


def test_data_scale_sample_is_bounded_and_seeded():
    images = torch.arange(5000, dtype=torch.float32)[:, None, None].expand(5000, 2, 2)
    sample = sample_images(images, count=100)
    assert sample.shape == (100, 2, 2)
    assert torch.equal(sample, sample_images(images, count=100))
    assert len(torch.unique(sample[:, 0, 0])) == 100
    assert torch.equal(sample_images(images[:30], count=100), images[:30])


def test_training_on_a_streamed_stack_equals_training_on_its_tensor(tmp_path):
    write_dataset(tmp_path, n=16, m=40, snr=4.0)
    streamed = particle_data(load_particles(tmp_path / "p.star"))
    loaded = ParticleData(
        streamed.images[torch.arange(40)], streamed.apix, streamed.ctf, streamed.translations_px
    )
    cfg = TrainConfig(steps=4, batch_size=8, heads=2, kmax_steps=3)
    losses = {}
    results = {}
    for name, data in (("streamed", streamed), ("loaded", loaded)):
        losses[name] = []
        results[name] = train(data, cfg, on_step=lambda info, _, key=name: losses[key].append(info.loss))
    assert losses["streamed"] == losses["loaded"]
    assert torch.equal(results["streamed"].volume, results["loaded"].volume)
    assert torch.equal(results["streamed"].rotations, results["loaded"].rotations)


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_reading_a_whole_stack_in_batches_keeps_memory_flat(tmp_path):
    m, n = 4000, 64  # 64 MB of images
    with StackWriter(tmp_path / "s.mrcs", m, n, 2.0) as w:
        for i in range(0, m, 500):
            w[i : i + 500] = np.full((500, n, n), 1.0, np.float32)
    names = [f"{i + 1}@s.mrcs" for i in range(m)]
    write_star(tmp_path / "p.star", pd.DataFrame({"rlnImageName": names}), default_optics(2.0, n))
    images = StackImages(load_particles(tmp_path / "p.star"))
    images[torch.arange(256)]  # warm up allocator and file handles
    before = _rss_kb()
    total = sum(float(images[rows].sum()) for rows in torch.arange(m).split(256))
    grown_mb = (_rss_kb() - before) / 1024
    assert total == m * n * n
    assert grown_mb < 24, f"resident memory grew by {grown_mb:.0f} MB reading a 64 MB stack"
