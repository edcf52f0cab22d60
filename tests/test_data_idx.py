"""Tests for convnet_gpu.data.idx: reading IDX files (raw or gzipped) and image/label pairs."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from data_helpers import idx_bytes, sample_images, write_idx
from helpers import assert_one_line_mentioning

from convnet_gpu.data import DataError, load_idx_pair, read_idx


# ---- read_idx -------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_roundtrips_uint8_images(tmp_path, gz):
    images = sample_images(5)
    # A misleading name proves gzip is detected from content, not the suffix.
    path = write_idx(tmp_path / "images.bin", images, gz=gz)
    result = read_idx(path)
    assert result.dtype == np.uint8
    assert result.shape == (5, 4, 4)
    np.testing.assert_array_equal(result, images)
    result[0, 0, 0] = 1  # must be writable, not a view of the file bytes


@pytest.mark.parametrize("dtype", [">i2", ">f4"])
def test_read_idx_returns_native_endian_for_wider_types(tmp_path, dtype):
    values = np.array([[-3, 7, 1000], [2, 0, -1]]).astype(dtype)
    result = read_idx(write_idx(tmp_path / "wide.idx", values, dtype=dtype))
    assert result.dtype.isnative
    assert result.shape == (2, 3)
    np.testing.assert_array_equal(result, values)


def test_read_idx_1d_labels(tmp_path):
    labels = np.array([0, 9, 3, 255], dtype=np.uint8)
    result = read_idx(write_idx(tmp_path / "labels.gz", labels, gz=True))
    np.testing.assert_array_equal(result, labels)


def test_bad_magic_names_file_and_magic(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"PK\x03\x04" + bytes(20))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "bad IDX magic 0x504b0304", "is this an IDX file?")


def test_unsupported_type_byte(tmp_path):
    path = tmp_path / "weird.idx"
    path.write_bytes(bytes([0, 0, 0x07, 1]) + struct.pack(">I", 2) + b"ab")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "unsupported IDX element type 0x07")


def test_zero_dimensions_rejected(tmp_path):
    path = tmp_path / "scalar.idx"
    path.write_bytes(bytes([0, 0, 0x08, 0]) + b"x")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "0 dimensions")


def test_truncated_header(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">I", 60000))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "truncated IDX header")


@pytest.mark.parametrize("gz", [False, True])
def test_truncated_payload(tmp_path, gz):
    data = idx_bytes(sample_images(3))[:-5]
    path = tmp_path / "cut.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "truncated payload", "43 bytes", "expected 48")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(sample_images(3)) + b"\x00\x01\x02")
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "trailing bytes", "3 extra")


def test_corrupt_gzip(tmp_path):
    compressed = bytearray(gzip.compress(idx_bytes(sample_images(20))))
    compressed[15:40] = bytes(25)  # clobber the deflate stream, keep the 1f 8b magic
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(compressed))
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "corrupt gzip")


def test_cut_gzip_stream(tmp_path):
    compressed = gzip.compress(idx_bytes(sample_images(20)))
    path = tmp_path / "cut.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert_one_line_mentioning(error, str(path), "corrupt gzip")


def test_missing_file_is_data_error(tmp_path):
    path = tmp_path / "nope-idx3-ubyte.gz"
    with pytest.raises(DataError) as error:
        read_idx(path)
    assert not isinstance(error.value, FileNotFoundError)
    assert_one_line_mentioning(error, str(path), "file not found")


# ---- load_idx_pair --------------------------------------------------------------------------
def test_load_idx_pair_roundtrip(tmp_path):
    images, labels = sample_images(6), np.arange(6, dtype=np.uint8)
    got_x, got_y = load_idx_pair(
        write_idx(tmp_path / "x.gz", images, gz=True), write_idx(tmp_path / "y", labels)
    )
    assert got_x.dtype == np.uint8 and got_y.dtype == np.uint8
    np.testing.assert_array_equal(got_x, images)
    np.testing.assert_array_equal(got_y, labels)


def test_load_idx_pair_count_mismatch_names_both(tmp_path):
    x_path = write_idx(tmp_path / "imgs", sample_images(6))
    y_path = write_idx(tmp_path / "lbls", np.zeros(5, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        load_idx_pair(x_path, y_path)
    assert_one_line_mentioning(error, str(x_path), str(y_path), "6 images", "5 labels")


def test_load_idx_pair_rejects_wrong_dims(tmp_path):
    flat = write_idx(tmp_path / "flat", np.zeros((4, 16), dtype=np.uint8))
    labels = write_idx(tmp_path / "lbls", np.zeros(4, dtype=np.uint8))
    with pytest.raises(DataError) as error:
        load_idx_pair(flat, labels)
    assert_one_line_mentioning(error, str(flat), "3-D")
    with pytest.raises(DataError) as error:
        load_idx_pair(write_idx(tmp_path / "imgs", sample_images(4)), flat)
    assert_one_line_mentioning(error, str(flat), "1-D")
