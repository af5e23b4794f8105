"""The benchmark's baselines compute what ours compute, and its JSON has the promised shape."""
import json

import numpy as np
import pytest

from pamtri.pipeline import bench
from pamtri.pipeline.bench.baselines import decode_loop, euclidean, evaluate_loop, rerank_dense
from pamtri.pipeline.bench.harness import make_row
from pamtri.pipeline.bench.inputs import veri_like


def test_ratio_reads_times_better():
    assert make_row("x", 2.0, 6.0, "s").ratio == pytest.approx(3.0)        # time: baseline / ours
    assert make_row("x", 30.0, 10.0, "img/s").ratio == pytest.approx(3.0)  # rate: ours / baseline
    assert make_row("x", 100.0, 400.0, "MiB").ratio == pytest.approx(4.0)  # memory: baseline / ours


def test_decode_loop_is_the_reference_rule():
    from pamtri.pose.heatmaps import decode
    hm = np.random.default_rng(0).random((3, 36, 16, 16), dtype=np.float32)
    xy, conf = decode(hm, method="reference")
    bxy, bconf = decode_loop(hm)
    np.testing.assert_allclose(xy, bxy)
    np.testing.assert_allclose(conf, bconf)


def test_evaluate_loop_matches_the_metrics_module():
    from pamtri.reid.metrics import metrics_from_distances
    qf, gf, qi, gi, qc, gc = veri_like(40, 300, ids=20, cams=4, dim=16)
    dist = euclidean(qf, gf)
    ours, base = metrics_from_distances(dist, qi, gi, qc, gc), evaluate_loop(dist, qi, gi, qc, gc)
    assert ours["mAP"] == pytest.approx(base["mAP"], abs=1e-9)
    assert ours["mINP"] == pytest.approx(base["mINP"], abs=1e-9)
    np.testing.assert_allclose(ours["cmc"], base["cmc"], atol=1e-9)


def test_dense_rerank_baseline_agrees_with_ours():
    from pamtri.reid.rerank import rerank
    qf, gf, *_ = veri_like(20, 120, ids=15, cams=4, dim=16)
    q_g, q_q, g_g = euclidean(qf, gf), euclidean(qf, qf), euclidean(gf, gf)
    ours, base = rerank(q_g, q_q, g_g), rerank_dense(q_g, q_q, g_g).astype(np.float32)
    assert np.abs(ours - base).max() < 2e-3  # the dense baseline keeps its encoding in float16
    assert (np.argsort(ours, 1)[:, 0] == np.argsort(base, 1)[:, 0]).mean() >= 0.9


def test_run_bench_writes_the_json_rows(tmp_path):
    out = tmp_path / "bench.json"
    result = bench.run_bench(quick=True, only=["decode"], out=out)
    saved = json.loads(out.read_text())
    assert saved["rows"] == result["rows"] and "machine" in saved
    (row,) = saved["rows"]
    assert set(row) >= {"name", "ours", "baseline", "unit", "ratio", "roofline_share"}
    assert row["name"] == "decode" and row["ratio"] == pytest.approx(row["ours"] / row["baseline"])
    assert "| decode |" in bench.format_table(saved)


def test_index_rows_compare_flat_with_torch_and_ivf_with_flat():
    from pamtri.pipeline.bench.index import bench_index
    search, ivf = bench_index(quick=True)
    assert search.name == "index_search" and ivf.name == "index_ivf" and search.unit == ivf.unit == "queries/s"
    assert "identical top-10 for 100.0%" in search.note
    recall = float(ivf.note.split("recall@10 ")[1].split(",")[0])
    assert recall >= 0.95, ivf.note
    assert ivf.baseline == search.ours  # IVF is measured against the same flat index


def test_scale_rows_measure_evaluation_and_re_ranking_in_child_processes(monkeypatch):
    from pamtri.pipeline.bench import scale
    monkeypatch.setitem(scale.SHAPES, True, (60, 600, 16))
    rows = {r.name: r for r in scale.bench_scale(quick=True)}
    assert list(rows) == ["evaluate_large", "evaluate_large_peak", "rerank_large", "rerank_large_peak"]
    assert all(r.ours > 0 and r.baseline > 0 for r in rows.values() if r.unit == "s")
    assert "60x600" in rows["evaluate_large"].note and "12+120" in rows["rerank_large"].note
    assert "clear_refs" in rows["rerank_large_peak"].note
    assert all(r.ours > 0 for r in rows.values())  # the work's own peak, not 0 below the features' generation


@pytest.mark.parametrize("sample", [False, True])
def test_peak_rss_sees_a_known_allocation_below_an_earlier_larger_peak(sample):
    """A 200 MiB array touched inside the measured work reads 200 MiB, although a 400 MiB array was touched and
    freed before (a difference of ru_maxrss reads 0 there): with the high-water mark reset, and with sampling."""
    from pamtri.pipeline.bench.harness import peak_rss
    earlier = np.ones(400 << 20, np.uint8)
    del earlier
    total, mib = peak_rss(lambda: int(np.ones(200 << 20, np.uint8).sum()), sample=sample)
    assert total == 200 << 20
    assert 190 <= mib <= 230, mib
    assert peak_rss(lambda: None, sample=sample)[1] < 20


def test_scale_features_have_one_query_per_vehicle_and_a_moderate_map():
    from pamtri.pipeline.bench.scale import labelled_features
    from pamtri.reid.metrics import metrics_from_features
    qf, gf, q_ids, g_ids, q_cams, g_cams = labelled_features(200, 2600, 64)
    assert qf.dtype == np.float32 and gf.shape == (2600, 64) and sorted(q_ids) == list(range(200))
    assert 0.2 < metrics_from_features(qf, gf, q_ids, g_ids, q_cams, g_cams)["mAP"] < 0.95


def test_layer_costs_give_the_hand_computed_attainable_bound():
    """Conv 2 -> 4 channels, 3 x 3, no bias, on (1, 2, 5, 5), then ReLU: the conv does 2 * 4 * 25 * 2 * 9 = 3,600
    FLOPs and moves 50 + 100 input/output values and 72 weights; the ReLU 0 FLOPs, 100 + 100 values. At
    1,000 FLOP/s and 1,000 bytes/s: fp32 max(3.6, 0.888) + max(0, 0.8) = 4.4 s; int8 (1 byte) 3.6 + 0.2 = 3.8 s."""
    import torch

    from pamtri.pipeline.bench.harness import attainable_seconds, layer_costs
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1, bias=False), torch.nn.ReLU())
    x = torch.randn(1, 2, 5, 5)
    costs = layer_costs(model, lambda: model(x))
    assert [(c.name, c.flops, c.bytes) for c in costs] == [("0", 3600, 888), ("1", 0, 800)]
    assert attainable_seconds(costs, 1000.0, 1000.0) == pytest.approx(4.4)
    assert attainable_seconds(layer_costs(model, lambda: model(x), element_bytes=1), 1000.0, 1000.0) == \
        pytest.approx(3.8)
    # the runtime rows' bounds: the same layers at 4 / 2 / 1 bytes per value, each precision against its own peak
    from pamtri.pipeline.bench.inference import precision_bounds
    bounds = precision_bounds(layer_costs(model, lambda: model(x), element_bytes=1), 1000.0,
                              {"fp32": 1000.0, "bf16": 2000.0, "int8": 4000.0})
    assert bounds == pytest.approx({"fp32": 4.4, "bf16": 1.8 + 0.4, "int8": 0.9 + 0.2})


@pytest.mark.parametrize("precision", ["fp32", "bf16", "int8"])
def test_peak_flops_measures_each_precision(precision):
    from pamtri.pipeline.bench.harness import peak_flops
    assert 1e8 < peak_flops(precision, n=256, seconds=0.05) < 1e14
