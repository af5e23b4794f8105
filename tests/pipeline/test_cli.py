"""The console script's shape: handler names, one module per command, errors through the one-line path."""
import argparse
import importlib

import numpy as np

from pamtri.pipeline.cli import COMMAND_MODULES, build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def test_handlers_are_named_cmd_group_action():
    names = {}
    for group, sub in _subcommands(build_parser()).items():
        actions = _subcommands(sub) or {None: sub}
        for action, parser in actions.items():
            expected = "cmd_" + group + (f"_{action}" if action else "")
            names[expected.replace("-", "_")] = parser.get_default("func").__name__
    assert names and {k: v for k, v in names.items() if k != v} == {}
    assert "cmd_cache_import_legacy" in names and "cmd_search" in names


def test_every_command_module_registers_its_own_command_only():
    for name in COMMAND_MODULES:
        parser = argparse.ArgumentParser()
        importlib.import_module(f"pamtri.pipeline.commands.{name}").register(parser.add_subparsers())
        assert list(_subcommands(parser)) == [name]
    assert COMMAND_MODULES.index("search") == COMMAND_MODULES.index("embed") + 1  # --help order unchanged


def test_cache_verify_reports_a_corrupt_chunk_as_one_error_line(tmp_path, capsys):
    from pamtri.pose.cache import CacheSpec, CacheWriter
    names = [f"{i:04d}_c001_{i:08d}_0.jpg" for i in range(4)]
    spec = CacheSpec(weights_sha256="test", pose_config={}, input_size=(64, 64), heatmap_size=(16, 16), chunk_size=2)
    writer = CacheWriter(tmp_path / "cache", names, spec)
    rng = np.random.default_rng(0)
    writer.build(lambda batch: (rng.random((len(batch), 36, 16, 16), dtype=np.float32),
                                rng.random((len(batch), 36, 3), dtype=np.float32)), progress=False)
    writer.finalise()
    assert main(["cache", "verify", str(tmp_path / "cache")]) == 0
    assert "all 2 chunks intact" in capsys.readouterr().out
    keypoints = np.load(tmp_path / "cache" / "keypoints.npy", mmap_mode="r+")
    keypoints[3, 0, 0] += 1.0  # the second chunk
    keypoints.flush()
    del keypoints
    assert main(["cache", "verify", str(tmp_path / "cache")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err == (f"pamtri: error: {tmp_path / 'cache'}: 1 chunk(s) do not match their checksums: "
                                 "[1]; run `pamtri cache build` with the same arguments to rebuild them\n")


def test_search_names_a_file_that_is_not_a_gallery(tmp_path, capsys):
    np.savez(tmp_path / "other.npz", features=np.zeros((2, 4)))
    assert main(["search", "--query", "q.jpg", "--gallery", str(tmp_path / "other.npz")]) == 1
    err = capsys.readouterr().err
    assert err == f"pamtri: error: {tmp_path / 'other.npz'}: not a `pamtri embed` file (missing paths, reid_weights)\n"
