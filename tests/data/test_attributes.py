"""StRDAN's orientation bins: (0, 60] -> 0, ..., (300, 360] -> 5; no label (NaN) -> -1, without warnings."""
import warnings

import numpy as np

from pamtri.data.attributes import orientation_bin


def test_orientation_bins_edges_and_wrap():
    got = orientation_bin([0.0, 0.5, 60.0, 60.01, 299.9, 300.0, 359.0, 360.0, 420.0, -30.0])
    assert got.tolist() == [5, 0, 0, 1, 4, 4, 5, 5, 0, 5]
    assert orientation_bin([90.0], bins=4).tolist() == [0] and orientation_bin([91.0], bins=4).tolist() == [1]


def test_nan_orientation_gives_minus_one_without_a_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning (invalid value in cast) would raise here
        got = orientation_bin([np.nan, 45.0, np.nan, np.inf])
    assert got.tolist() == [-1, 0, -1, -1]
