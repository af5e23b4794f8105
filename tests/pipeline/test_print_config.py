"""`--print-config`: the fully resolved config (defaults <- YAML with _base_ <- --set) on stdout, exit 0, no file
touched; a bad key or value fails as training would."""
from pathlib import Path

import yaml

from pamtri.pipeline.cli import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _printed(capsys, argv, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)  # training would create runs/... here
    capsys.readouterr()
    assert main(argv) == 0
    assert list(tmp_path.iterdir()) == []
    return yaml.safe_load(capsys.readouterr().out)


def _heads(cfg: dict) -> tuple:
    m = cfg["model"]
    return m["domain"], m["orientation"], m["color"], m["type"]


def test_reid_print_config_resolves_the_strdan_cases(capsys, tmp_path, monkeypatch):
    def show(case, *extra):
        return _printed(capsys, ["reid", "train", "--config", str(CONFIGS / "reid" / f"strdan_veri_case{case}.yaml"),
                                 "--out", str(tmp_path / "run"), "--print-config", *extra], tmp_path, monkeypatch)
    one = show(1)
    assert [s["domain"] for s in one["data"]["train"]] == ["real"] and _heads(one) == (False, False, False, False)
    assert one["name"] == "strdan_veri_case1" and one["model"]["backbone"] == "resnet50"  # from _strdan_veri.yaml
    cases = ((2, (True, True, False, False)), (4, (True, False, False, True)), (8, (True, True, True, True)))
    for case, heads in cases:
        cfg = show(case)
        assert _heads(cfg) == heads and [s["domain"] for s in cfg["data"]["train"]] == ["real", "synthetic"]
    assert show(8, "--set", "optim.lr=0.01")["optim"]["lr"] == 0.01


def test_pose_print_config_and_bad_keys_fail_as_training_would(capsys, tmp_path, monkeypatch):
    cfg = _printed(capsys, ["pose", "train", "--config", str(CONFIGS / "pose" / "demo.yaml"), "--set",
                            "model.name=hrnet_w32", "--print-config"], tmp_path, monkeypatch)
    assert cfg["model"]["name"] == "hrnet_w32" and "data" in cfg and "eval" in cfg
    for argv, key in ((["pose", "train", "--config", str(CONFIGS / "pose" / "demo.yaml"), "--set", "model.nope=1"],
                       "model.nope"),
                      (["reid", "train", "--config", str(CONFIGS / "reid" / "strdan_veri_case1.yaml"), "--set",
                        "sampler.k=x"], "sampler.k")):
        assert main([*argv, "--print-config"]) == 1
        err = capsys.readouterr().err
        assert key in err and len(err.strip().splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []
