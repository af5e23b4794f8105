"""The strong-baseline recipes (BoT, SBS, their pose-aware variants, the CityFlow pair, the synthetic pair):
each resolves through `pamtri reid train --print-config`, and the new parts train end to end."""
from pathlib import Path

import pytest
import yaml

from pamtri.common.checkpoint import load_checkpoint
from pamtri.pipeline.cli import main
from tests.conftest import write_tiny_reid_config, write_tiny_synth_tree

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "reid"
NEW = ("veri_bot_r50", "veri_bot_r50_k_h", "veri_sbs_r50ibn", "veri_sbs_r50ibn_k_h", "cityflow_bot_r50",
       "cityflow_bot_r50_k_h", "bot_r50_synthetic", "bot_r50_k_h_synthetic")


def _resolved(name, capsys, tmp_path, monkeypatch) -> dict:
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["reid", "train", "--config", str(CONFIGS / f"{name}.yaml"), "--out", str(tmp_path / "run"),
                 "--print-config"]) == 0
    assert list(tmp_path.iterdir()) == []
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("name", NEW)
def test_each_recipe_resolves(name, capsys, tmp_path, monkeypatch):
    cfg = _resolved(name, capsys, tmp_path, monkeypatch)
    m = cfg["model"]
    assert cfg["name"] == name and m["neck"] == "bnneck" and m["last_stride"] == 1
    assert cfg["eval"]["metric"] == "cosine" and m["embedding"] == "after_bn"
    assert (m["heatmaps"] and m["keypoints"]) == ("_k_h" in name)
    assert "mAP" in (CONFIGS / f"{name}.yaml").read_text().split("\n_base_")[0].split("\nname")[0]  # the anchor


@pytest.mark.parametrize("name", ["veri_vit_sie", "veri_vit_sie_pose"])
def test_each_vit_recipe_resolves(name, capsys, tmp_path, monkeypatch):
    """The TransReID pair: ViT-B/16 at stride 12 with SIE camera + view, SGD 0.008 cosine after a warm-up."""
    cfg = _resolved(name, capsys, tmp_path, monkeypatch)
    m, o = cfg["model"], cfg["optim"]
    assert cfg["name"] == name and m["backbone"].startswith("timm/vit_base_patch16_224") and m["neck"] == "bnneck"
    assert m["patch_stride"] == 12 and m["sie_cameras"] == 21 and m["sie_views"] == 8 and m["sie_coefficient"] == 3.0
    assert m["pretrained"] == "imagenet" and (cfg["data"]["height"], cfg["data"]["width"]) == (256, 256)
    assert o["name"] == "sgd" and o["lr"] == 0.01 and o["schedule"] == "cosine" and o["warmup_epochs"] > 0
    pose = name.endswith("_pose")
    assert (m["heatmaps"] and m["keypoints"]) == pose and (m["sie_view_source"] == "pose") == pose
    assert "82.1 mAP / 97.4 rank-1" in (CONFIGS / f"{name}.yaml").read_text()


def test_recipes_hold_their_tricks(capsys, tmp_path, monkeypatch):
    bot = _resolved("veri_bot_r50", capsys, tmp_path, monkeypatch)
    assert bot["model"]["backbone"] == "resnet50" and bot["loss"]["center"] == 0.0005 and bot["model"]["centers"]
    assert bot["data"]["random_erasing"] == 0.5 and bot["loss"]["label_smoothing"] == 0.1
    assert bot["optim"]["lr"] == 0.00035 and bot["optim"]["warmup_epochs"] == 10
    sbs = _resolved("veri_sbs_r50ibn", capsys, tmp_path, monkeypatch)
    assert sbs["model"]["backbone"] == "resnet50_ibn_a" and sbs["model"]["pooling"] == "gem"
    assert sbs["loss"]["id_loss"] == "circle" and sbs["loss"]["soft_margin"] and sbs["optim"]["schedule"] == "cosine"
    assert sbs["model"]["freeze_epochs"] == 10 and not sbs["model"]["centers"]
    city = _resolved("cityflow_bot_r50", capsys, tmp_path, monkeypatch)
    assert city["eval"]["track_file"].endswith("test_track.txt")
    synth = {n: _resolved(n, capsys, tmp_path, monkeypatch) for n in ("rs_synthetic", "bot_r50_synthetic")}
    for key in ("data", "sampler", "max_batches"):
        a, b = synth["rs_synthetic"][key], synth["bot_r50_synthetic"][key]
        if key == "data":
            a, b = ({k: v for k, v in d.items() if k != "random_erasing"} for d in (a, b))
        assert a == b, key
    assert synth["rs_synthetic"]["optim"]["epochs"] == synth["bot_r50_synthetic"]["optim"]["epochs"]


def test_bnneck_circle_gem_freeze_and_test_time_train_end_to_end(tmp_path):
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=2, batches=2)
    sets = ["model.backbone=timm/resnet18", "model.neck=bnneck", "model.id_fc=0", "model.pooling=gem",
            "model.last_stride=1", "model.classifier=cosine", "model.centers=true", "model.freeze_iters=2",
            "loss.id_loss=circle", "loss.center=0.0005", "loss.soft_margin=true", "optim.schedule=cosine",
            "eval.metric=cosine", "eval.flip_feature=true", "eval.query_expansion=true"]
    out = tmp_path / "run"
    overrides = [a for s in sets for a in ("--set", s)]
    assert main(["reid", "train", "--config", str(cfg), "--out", str(out), *overrides]) == 0
    rows = (out / "metrics.csv").read_text().splitlines()
    assert "loss_center" in rows[0] and "mAP" in rows[0] and len(rows) == 3
    best = load_checkpoint(out / "best.pt")
    assert "centers" in best["model"] and "gem.p" in best["model"] and "bnneck.weight" in best["model"]
    assert best["model"]["backbone.conv1.weight"].shape[1] == 3 + 36  # the tiny config's heatmap channels
    assert 0 <= best["metrics"]["mAP"] <= 1


def test_training_freezes_the_backbone_for_the_first_freeze_iters_steps(tmp_path, monkeypatch):
    from pamtri.reid.model import ReIDNet
    root = write_tiny_synth_tree(tmp_path / "data", ids=8)
    cfg = write_tiny_reid_config(tmp_path / "tiny.yaml", root, epochs=2, batches=2, every=0)
    flags = []
    feature_map = ReIDNet.feature_map

    def recording(self, images):
        if self.training:
            flags.append(self.backbone_frozen)
        return feature_map(self, images)
    monkeypatch.setattr(ReIDNet, "feature_map", recording)
    assert main(["reid", "train", "--config", str(cfg), "--out", str(tmp_path / "run"), "--set",
                 "model.freeze_iters=3"]) == 0
    assert flags == [True, True, True, False]
