"""The ``decode`` row: vectorised heatmap decoding vs the per-keypoint loop."""
from __future__ import annotations

import numpy as np
import torch

from pamtri.pose.heatmaps import decode

from .baselines import decode_loop
from .harness import Row, make_row, timed
from .inputs import fake_pose_outputs


def bench_decode(quick: bool) -> list[Row]:
    """Vectorised heatmap decoding vs a per-keypoint Python loop (same rule, same results)."""

    n = 64 if quick else 256
    rng = np.random.default_rng(0)
    hm = fake_pose_outputs(n, 256, rng)[0] + rng.uniform(0, 0.01, (n, 36, 64, 64)).astype(np.float32)
    ours_xy, ours_c = decode(hm, method="reference")
    base_xy, base_c = decode_loop(hm)
    if not (np.allclose(ours_xy, base_xy) and np.allclose(ours_c, base_c)):
        raise AssertionError("vectorised decoding differs from the per-keypoint loop")
    t_ours = timed(lambda: decode(hm, method="reference"))
    t_dark = timed(lambda: decode(hm, method="dark"))
    t_loop = timed(lambda: decode_loop(hm), repeat=1)
    # Any decoder reads every heatmap value once: one max pass over the array is the floor for both sides.
    t_floor = timed(lambda: torch.from_numpy(hm).amax(dim=(2, 3)))
    note = (f"{n}x36 heatmaps 64x64, reference rule; DARK vectorised: {n / t_dark:.0f} img/s; one read pass "
            f"of the heatmaps alone: {n / t_floor:.0f} img/s, so no decoder can beat the loop by more than "
            f"{t_loop / t_floor:.1f}x here")
    return [make_row("decode", n / t_ours, n / t_loop, "img/s", note=note)]
