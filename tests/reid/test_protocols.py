"""VehicleID's protocol pieces: the summary over draws and the evaluation records of training (the first draw)."""
from __future__ import annotations

import pytest

from pamtri.common.errors import DataError
from pamtri.data.readers import gallery_draws, read_split
from pamtri.reid.config import DataConfig
from pamtri.reid.evaluate import read_eval_records
from pamtri.reid.protocols import summarise_draws


def draw(m, r1, r5, cmc0):
    return {"mAP": m, "rank1": r1, "rank5": r5, "mINP": m / 2, "cmc": [cmc0, 1.0], "num_queries": 6,
            "color_acc": None}


def test_summary_is_the_mean_and_population_std_over_the_draws():
    s = summarise_draws([draw(0.2, 0.5, 1.0, 0.5), draw(0.4, 0.7, 1.0, 0.7)])
    assert (s["mAP"], s["rank1"], s["rank5"], s["mINP"]) == pytest.approx((0.3, 0.6, 1.0, 0.15))
    assert (s["mAP_std"], s["rank1_std"], s["rank5_std"]) == pytest.approx((0.1, 0.1, 0.0))
    assert s["cmc"] == pytest.approx([0.6, 1.0]) and s["num_queries"] == 6 and s["color_acc"] is None
    assert s["draws"] == [{"mAP": 0.2, "rank1": 0.5, "rank5": 1.0}, {"mAP": 0.4, "rank1": 0.7, "rank5": 1.0}]


def test_training_evaluates_on_the_first_draw(vehicleid_tree):
    data = DataConfig(eval_root=str(vehicleid_tree), eval_format="vehicleid", test_size=1600, draw_seed=5)
    query, gallery = read_eval_records(data, cameras=False)
    test = read_split(vehicleid_tree, "test", "vehicleid", test_size=1600)
    q, g = gallery_draws(test, 1, seed=5)[0]
    assert [r.path for r in query] == [test[i].path for i in q] and [r.path for r in gallery] == [test[i].path
                                                                                                  for i in g]
    with pytest.raises(DataError, match="VehicleID has no camera ids.*set eval.ignore_cameras: true"):
        read_eval_records(data, cameras=True)


@pytest.mark.parametrize("field, value", [("test_size", -1), ("draws", 0)])
def test_config_refuses_bad_test_size_or_draws(field, value):
    from pamtri.common.errors import ConfigError
    with pytest.raises(ConfigError, match=f"data.{field}"):
        DataConfig(**{field: value}).validate()
