"""``reid eval``'s config: the checkpoint's stored config with its model, then --config, then --set."""
from types import SimpleNamespace

import pytest

from pamtri.common.config import to_dict
from pamtri.common.errors import ConfigError
from pamtri.reid.config import ModelConfig
from pamtri.reid.evaluate_checkpoint import checkpoint_config


def test_checkpoint_config_layers_stored_config_model_yaml_and_set(tmp_path):
    held = ModelConfig(heatmaps=True, segments=False, keypoints=True)
    model = SimpleNamespace(cfg=held)
    ckpt = {"config": {"eval": {"batch_size": 7, "k1": 11}, "model": to_dict(ModelConfig())}}
    f = tmp_path / "eval.yaml"
    f.write_text("eval:\n  rerank: true\n")
    cfg = checkpoint_config(ckpt, model, f, ["eval.k1=5"])
    assert (cfg.eval.batch_size, cfg.eval.rerank, cfg.eval.k1) == (7, True, 5)
    assert to_dict(cfg.model) == to_dict(held)  # the model the checkpoint holds, not its stored description
    assert ckpt["config"]["model"] == to_dict(ModelConfig())  # the checkpoint dict is left as it was
    assert checkpoint_config({}, model).eval.batch_size == 64  # no stored config: the defaults
    with pytest.raises(ConfigError, match=rf"^checkpoint config \+ {f} \(with --set overrides\): key 'eval.k1'"):
        checkpoint_config(ckpt, model, f, ["eval.k1=many"])
