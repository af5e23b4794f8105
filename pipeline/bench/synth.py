"""The ``synth`` row: synthetic rendering speed against its target."""
from __future__ import annotations

from pamtri.pipeline.synth import benchmark

from .harness import Row, make_row


def bench_synth(quick: bool) -> list[Row]:
    """Synthetic rendering speed at 128 px on one core vs the 200 images/s target."""
    rate = benchmark(n=150 if quick else 600, size=128)
    return [make_row("synth", rate, 200.0, "img/s", note="render only, 128 px, one core; baseline = target")]
