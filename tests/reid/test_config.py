"""Every configs/reid YAML loads; impossible combinations are refused with the key named."""
from pathlib import Path

import pytest

from pamtri.common.config import load_config
from pamtri.common.errors import ConfigError
from pamtri.reid.config import ReIDConfig

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "reid"
PAMTRI_ROWS = ("r", "rs", "rs_mt", "rs_mt_k", "rs_mt_k_h", "rs_mt_k_s", "r_mt_k", "xent", "htri")


def test_every_config_loads():
    files = sorted(p for p in CONFIGS.glob("*.yaml"))
    assert len(files) >= 2 * len(PAMTRI_ROWS) + 8
    for f in files:
        cfg = load_config(ReIDConfig, f)
        if not f.name.startswith("_"):
            assert cfg.name == f.stem, f


@pytest.mark.parametrize("data", ["veri", "cityflow"])
def test_pamtri_rows(data):
    rows = {r: load_config(ReIDConfig, CONFIGS / f"{data}_{r}.yaml") for r in PAMTRI_ROWS}
    def flags(c):
        m = c.model
        return (len(c.data.train), m.color and m.type, m.keypoints, m.heatmaps, m.segments)
    assert flags(rows["r"]) == (1, False, False, False, False)
    assert flags(rows["rs"]) == (2, False, False, False, False)
    assert flags(rows["rs_mt"]) == (2, True, False, False, False)
    assert flags(rows["rs_mt_k"]) == (2, True, True, False, False)
    assert flags(rows["rs_mt_k_h"]) == (2, True, True, True, False)
    assert flags(rows["rs_mt_k_s"]) == (2, True, True, False, True)
    assert flags(rows["r_mt_k"]) == (1, True, True, False, False)
    assert rows["xent"].loss.triplet == 0 and rows["htri"].loss.id == 0 and not rows["htri"].model.id_head
    c = rows["rs_mt_k_h"]
    assert (c.model.backbone, c.model.in_channels, c.loss.color, c.loss.margin) == ("densenet121", 39, 0.125, 0.3)
    got = (c.sampler.batch_size, c.sampler.k, c.optim.lr, c.optim.milestones, c.optim.epochs)
    assert got == (32, 4, 3e-4, [20, 40], 60)


# the paper's numbering (Tables 1 and 2): (orientation, colour, type); case 1 is the real-only baseline
STRDAN_CASES = {1: None, 2: (True, False, False), 3: (False, True, False), 4: (False, False, True),
                5: (True, True, False), 6: (True, False, True), 7: (False, True, True), 8: (True, True, True)}


@pytest.mark.parametrize("data", ["veri", "cityflow"])
def test_strdan_cases_numbered_as_the_paper(data):
    for i, heads in STRDAN_CASES.items():
        c = load_config(ReIDConfig, CONFIGS / f"strdan_{data}_case{i}.yaml")
        m = c.model
        assert m.backbone == "resnet50" and m.id_head and c.loss.objective == "strdan"
        assert (c.data.width, c.data.height, c.optim.name, c.sampler.batch_size) == (128, 256, "amsgrad", 16)
        assert c.data.eval_root == ("data/VeRi" if data == "veri" else "data/CityFlow")
        if heads is None:
            assert [s.domain for s in c.data.train] == ["real"] and not m.domain
            assert not (m.orientation or m.color or m.type) and c.sampler.kind == "identity"
        else:
            assert sorted(s.domain for s in c.data.train) == ["real", "synthetic"] and m.domain
            assert (m.orientation, m.color, m.type) == heads and c.sampler.kind == "domain"
            assert c.sampler.ids_per_batch == 2 and c.sampler.k == 4
    assert not list(CONFIGS.glob("strdan_case?.yaml"))  # the old binary-counted names are gone


@pytest.mark.parametrize("overrides,message", [
    (["data.pose_source=none"], "pose_source is 'none'"),
    (["sampler.k=64"], "exceeds sampler.batch_size"),
    (["sampler.batch_size=30"], "not a multiple"),
    (["model.id_head=false"], "no ID classifier"),
    (["model.domain=true"], "only one domain"),
    (["sampler.kind=domain"], "both a real and a synthetic"),
    (["model.embedding=fc", "model.id_fc=0"], "use embedding: pool"),
    (["optim.milestones=[40, 20]"], "milestones"),
])
def test_impossible_combinations(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(ReIDConfig, CONFIGS / "veri_r_mt_k.yaml", ["model.heatmaps=true"] + overrides)
