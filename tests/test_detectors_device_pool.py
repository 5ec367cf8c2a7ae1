"""Device-resident detector training: the `DevicePool` gives the host pool's batches for a seed, so the
U-Net trained from it is identical (on the CPU, where both paths are fp32, bit for bit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from test_detectors_unet import identical_kind_set

from acbench.detectors.common import DevicePool, TrainingPool
from acbench.detectors.unet import PRESETS, UnetLocalization, train_unet

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def synthetic(brick, tmp_path_factory):
    return identical_kind_set(brick, tmp_path_factory.mktemp("pool") / "syn", False, per_type=3)


@pytest.mark.parametrize("ratio", [0.0, 0.5, 1.0])
def test_device_pool_draws_the_host_pools_batches(brick, synthetic, ratio):
    host = TrainingPool.build(brick, synthetic.records, 32, ratio)
    device = DevicePool(host, "cpu")
    rng_host, rng_device = np.random.default_rng(7), np.random.default_rng(7)
    for size in (8, 8, 3, 16):
        images_h, masks_h = host.batch(size, rng_host)
        images_d, masks_d = device.batch(size, rng_device)
        assert torch.equal(images_h, images_d) and torch.equal(masks_h, masks_d)
        assert images_d.dtype == torch.uint8 and masks_d.dtype == torch.bool
    assert rng_host.random() == rng_device.random()  # both consumed the generator identically
    if ratio == 1.0:
        assert masks_d.flatten(1).any(dim=1).all()  # every sample a synthetic pair (none has an empty mask)


def test_device_pool_without_pairs_draws_normals_only(brick):
    host = TrainingPool.build(brick, [], 32, 0.5)
    device = DevicePool(host, "cpu")
    a, b = host.batch(8, np.random.default_rng(1)), device.batch(8, np.random.default_rng(1))
    assert torch.equal(a[0], b[0]) and not b[1].any()


def test_training_from_the_device_pool_equals_the_host_path(brick, synthetic):
    pool = TrainingPool.build(brick, synthetic.records, 32, 0.5)
    preset = replace(PRESETS["tiny"], image_size=32, epochs=2, samples_per_epoch=32)
    models = [train_unet(pool, preset, 3, torch.device("cpu"), data_on_device=flag) for flag in (True, False)]
    states = [m.state_dict() for m in models]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name  # tolerance 0: same batches, same fp32 math
    other_seed = train_unet(pool, preset, 4, torch.device("cpu")).state_dict()
    assert any(not torch.equal(states[0][k], other_seed[k]) for k in states[0] if states[0][k].is_floating_point())


def test_old_path_option_is_validated():
    assert UnetLocalization({"data_on_device": False}).options.data_on_device is False
    assert UnetLocalization({}).options.data_on_device is True
    with pytest.raises(ValueError):
        UnetLocalization({"data_on_device": "sometimes"})
