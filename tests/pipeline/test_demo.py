"""`pamtri demo`, shrunk: every step runs through the real CLI and the report shows both stages."""
import json
import re
from pathlib import Path

import pytest

from pamtri.pipeline.cli import main

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_end_to_end_writes_a_complete_report(tmp_path, capsys):
    argv = ["demo", "--out", str(tmp_path),
            "--set", "synth.ids=12", "--set", "synth.images_per_id=4", "--set", "synth.size=64",
            "--set", "synth.cameras=2", "--set", "synth.workers=1",
            "--set", 'pose_overrides=["codec.input_size=[64, 64]", "optim.epochs=1", "optim.milestones=[1]", '
                     '"eval.every=1", "data.batch_size=8", "data.max_val=16"]',
            "--set", 'reid_overrides=["data.height=32", "data.width=32", "data.workers=0", "optim.epochs=1", '
                     '"max_batches=2", "eval.every=1", "sampler.batch_size=8", "sampler.k=2"]',
            "--set", "city.cameras=2", "--set", "city.vehicles=4", "--set", "city.minutes=0.15",
            "--set", "city.width=128", "--set", "city.height=96"]
    assert main(argv) == 0
    runs = list(tmp_path.iterdir())
    assert len(runs) == 1
    run = runs[0]
    report = (run / "report.md").read_text()
    # every figure the report shows exists, and the HTML page shows the same ones
    figures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(figures) == 5
    for fig in figures:
        assert (run / fig).is_file() and (run / fig).stat().st_size > 1000, fig
        assert f"src='{fig}'" in (run / "index.html").read_text()
    # the PCK row has 8 numbers; the ReID table has the two variants with numbers in percent
    pck = json.loads((run / "pose" / "eval" / "pck.json").read_text())
    assert 0.0 <= pck["table"]["mean"] <= 100.0
    rows = [line for line in report.splitlines() if line.startswith("| RGB only") or line.startswith("| pose-aware")]
    assert len(rows) == 2
    for variant in ("baseline", "pose"):
        m = json.loads((run / f"reid_{variant}" / "eval" / "metrics.json").read_text())
        assert 0.0 < m["mAP"] <= 1.0 and m["mAP@100"] <= m["mAP"] + 1e-9
        assert f"{100 * m['mAP']:.2f}" in report
    # the city stage: IDF1, the OD matrix and a vehicle's trip, and the full MTMC report beside it
    assert "## City stage" in report and "IDF1" in report and "trip" in report
    assert (run / "mtmc" / "report.html").is_file() and (run / "mtmc" / "track1.txt").is_file()
    assert "City stage" in (run / "index.html").read_text()
    # the pose-aware model really read the caches of the pose model the demo trained
    cfg = (run / "reid_pose" / "config.yaml").read_text()
    assert "pose_source: cache" in cfg and str(run / "cache" / "train") in cfg
    # the budget was planned from timed steps and the report says what it left each stage
    budget = json.loads((run / "budget.json").read_text())
    assert budget["pose"]["step_s"] > 0 and budget["reid"]["step_s"] > 0
    assert budget["pose"]["epochs"] == 1 and budget["reid"]["epochs"] == 1  # a tiny run fits: nothing shortened
    assert "Budget 13.5 minutes on this machine: pose model 1 of 1 epochs (as configured" in report
    assert "demo finished" in capsys.readouterr().out
