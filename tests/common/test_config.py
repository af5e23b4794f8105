from dataclasses import dataclass, field
from typing import ClassVar

import pytest

from pamtri.common.config import from_dict, load_config, parse_overrides, read_yaml, save_config, upgrade_renamed
from pamtri.common.errors import ConfigError


@dataclass
class Optim:
    lr: float = 1e-3
    steps: list[int] = field(default_factory=lambda: [170, 200])
    name: str = "adam"


@dataclass
class Cfg:
    epochs: int = 210
    amp: bool = True
    note: str | None = None
    optim: Optim = field(default_factory=Optim)

    def validate(self):
        if self.epochs <= 0:
            raise ConfigError("epochs must be positive")


def test_defaults_then_yaml_then_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("epochs: 5\noptim:\n  lr: 0.01\n")
    cfg = load_config(Cfg, f, ["optim.steps=[1, 2, 3]", "note=hello"])
    assert cfg.epochs == 5
    assert cfg.optim.lr == 0.01
    assert cfg.optim.steps == [1, 2, 3]
    assert cfg.optim.name == "adam"
    assert cfg.note == "hello"
    assert cfg.amp is True


def test_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lrr: 0.01\n")
    with pytest.raises(ConfigError, match=r"c\.yaml.*unknown key 'optim\.lrr'"):
        load_config(Cfg, f)


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"key 'epochs': expected an integer"):
        load_config(Cfg, None, ["epochs=abc"])
    with pytest.raises(ConfigError, match=r"key 'amp': expected true or false"):
        load_config(Cfg, None, ["amp=3"])


def test_validate_runs(tmp_path):
    with pytest.raises(ConfigError, match="epochs must be positive"):
        load_config(Cfg, None, ["epochs=0"])


def test_base_inheritance_and_missing_file(tmp_path):
    (tmp_path / "base.yaml").write_text("epochs: 7\noptim:\n  lr: 0.5\n  name: sgd\n")
    (tmp_path / "child.yaml").write_text("_base_: base.yaml\noptim:\n  lr: 0.25\n")
    data = read_yaml(tmp_path / "child.yaml")
    assert data == {"epochs": 7, "optim": {"lr": 0.25, "name": "sgd"}}
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "nope.yaml")


def test_set_requires_equals():
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_overrides(["epochs"])


def test_save_round_trip(tmp_path):
    cfg = load_config(Cfg, None, ["epochs=3", "optim.steps=[4]"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(Cfg, tmp_path / "resolved.yaml")
    assert again == cfg


@dataclass
class Stage:
    RENAMED: ClassVar[dict[str, str]] = {"old.rate": "optim.lr", "old.epochs": "epochs", "optim.steps_": "optim.steps"}
    epochs: int = 1
    optim: Optim = field(default_factory=lambda: Optim(lr=0.5, steps=[3]))


def test_renamed_key_is_refused_with_its_new_name(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("old:\n  rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Stage, f)
    assert str(e.value) == f"{f}: old.rate was renamed optim.lr"
    with pytest.raises(ConfigError) as e:
        load_config(Stage, None, ["optim.steps_=[1]"])
    assert str(e.value) == "--set: optim.steps_ was renamed optim.steps"
    with pytest.raises(ConfigError, match="<config>: old.epochs was renamed epochs"):
        from_dict(Stage, {"old": {"epochs": 2}})
    assert load_config(Stage, None, ["optim.lr=0.1", "epochs=2"]).optim.lr == 0.1


def test_upgrade_renamed_moves_old_keys_and_drops_emptied_sections():
    old = {"old": {"rate": 0.1, "epochs": 4}, "optim": {"name": "sgd"}}
    assert upgrade_renamed(Stage, old) == {"optim": {"name": "sgd", "lr": 0.1}, "epochs": 4}
    assert old == {"old": {"rate": 0.1, "epochs": 4}, "optim": {"name": "sgd"}}  # the input is left alone
    cfg = from_dict(Stage, upgrade_renamed(Stage, old))
    assert (cfg.epochs, cfg.optim.lr, cfg.optim.name) == (4, 0.1, "sgd")


def test_a_section_starts_from_its_fields_own_default(tmp_path):
    """Two configs can share a section class with different defaults (default_factory), also when a YAML
    file or --set gives some of the section's keys."""
    assert load_config(Stage).optim == Optim(lr=0.5, steps=[3])
    assert load_config(Stage, None, ["optim.name=sgd"]).optim == Optim(lr=0.5, steps=[3], name="sgd")
    f = tmp_path / "c.yaml"
    f.write_text("optim: {steps: [1, 2]}\n")
    assert load_config(Stage, f).optim == Optim(lr=0.5, steps=[1, 2])
    assert load_config(Cfg, f).optim == Optim(steps=[1, 2])  # the class's own defaults elsewhere


def test_stored_config_then_yaml_then_set(tmp_path):
    """A run's or checkpoint's stored config replaces the defaults; YAML and --set still go on top of it."""
    stored = {"epochs": 9, "optim": {"lr": 0.5, "name": "sgd"}}
    f = tmp_path / "c.yaml"
    f.write_text("optim:\n  lr: 0.25\n")
    cfg = load_config(Cfg, f, ["note=x"], stored=stored, stored_source="run/config.yaml")
    assert (cfg.epochs, cfg.optim.lr, cfg.optim.name, cfg.note) == (9, 0.25, "sgd", "x")
    assert stored == {"epochs": 9, "optim": {"lr": 0.5, "name": "sgd"}}  # not modified
    assert load_config(Cfg, None, (), stored={}) == Cfg()
    with pytest.raises(ConfigError, match=rf"^run/config\.yaml \+ {f} \(with --set overrides\): key 'epochs'"):
        load_config(Cfg, f, ["epochs=abc"], stored=stored, stored_source="run/config.yaml")
    with pytest.raises(ConfigError, match=r"^run/config\.yaml: unknown key 'optim\.lrr'"):
        load_config(Cfg, None, (), stored={"optim": {"lrr": 1}}, stored_source="run/config.yaml")
