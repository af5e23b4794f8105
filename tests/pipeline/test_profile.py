"""``python -m pamtri.pipeline.bench.profile``: the profiler table, the Chrome trace and the top-op shares."""
import json

import pytest
import torch


def test_profile_job_writes_the_table_and_trace_and_ranks_ops_by_self_cpu_time(tmp_path, one_torch_thread):
    from pamtri.pipeline.bench.profile import profile_job
    a, b = torch.randn(256, 256), torch.randn(256, 256)

    def job():
        for _ in range(20):
            a @ b  # matmul dominates the job's self CPU time
        a + b

    top = profile_job("job", job, tmp_path, rows=5)
    assert top[0][0] in ("aten::mm", "aten::matmul") and top[0][2] > 0.5
    assert [share for _, _, share in top] == sorted((share for _, _, share in top), reverse=True)
    assert sum(share for _, _, share in top) <= 1.0 + 1e-9
    assert "Self CPU" in (tmp_path / "job.txt").read_text()
    events = json.loads((tmp_path / "job.trace.json").read_text())["traceEvents"]
    assert any(e.get("name") in ("aten::mm", "aten::matmul") for e in events)


def test_profile_command_rejects_an_unknown_job(tmp_path):
    from pamtri.pipeline.bench.profile import main
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--only", "nothing"])


def test_openvino_layers_sum_the_per_layer_counters_of_both_stages(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("openvino")
    from pamtri.pipeline.bench.profile import openvino_layers
    from pamtri.pose.weights import build_pose_model
    from pamtri.reid.config import ModelConfig
    from pamtri.reid.weights import build_model
    torch.manual_seed(0)
    models = (build_pose_model("hrnet_w18_small").eval(),
              build_model(ModelConfig(heatmaps=True, segments=False, keypoints=True), num_ids=4).eval())
    rows = openvino_layers(2, models, size=64)
    assert {key.split(":")[0] for key, _, _ in rows} == {"pose", "reid"}
    assert any("Convolution" in key for key, _, _ in rows)
    assert [ms for _, ms, _ in rows] == sorted((ms for _, ms, _ in rows), reverse=True)
    assert sum(share for _, _, share in rows) == pytest.approx(1.0)
