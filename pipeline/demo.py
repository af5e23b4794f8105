"""``pamtri demo``: the whole PAMTRI pipeline on data generated on the spot, with a report.

It runs the same commands a user would run, in order: ``synth`` -> ``pose train`` -> ``pose eval`` ->
``cache build`` (train, query, test) -> ``reid train`` (RGB-only baseline and the pose-aware variant with
the same budget) -> ``reid eval`` for both -> the city stage (``synth city``: a few cameras, a minute of
traffic; ``mtmc run`` with the pose-aware model) -> ``report.md`` / ``index.html`` with tables and figures.
"""
from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pamtri.common.atomic import atomic_write_bytes, atomic_write_text
from pamtri.common.config import check_renamed, load_config, parse_overrides, save_config
from pamtri.common.errors import ConfigError, PamtriError
from pamtri.pipeline.cli import main
from pamtri.pose.config import PoseConfig
from pamtri.pose.keypoints import PCK_GROUP_TITLES
from pamtri.reid.config import ReIDConfig

from .budget import Budget
from .report import render

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]  # the repository, which holds configs/


@dataclass
class DemoSynth:
    """The generated data set (see ``pamtri synth --help``)."""
    seed: int = 7
    ids: int = 150
    images_per_id: int = 16
    size: int = 128
    style: str = "realistic"
    cameras: int = 4
    test_fraction: float = 0.5
    workers: int = 2


@dataclass
class DemoCity:
    """The city stage: a generated multi-camera scene tracked with the demo's pose-aware model (docs/mtmc.md)."""
    enabled: bool = True
    seed: int = 11
    cameras: int = 3
    vehicles: int = 16
    minutes: float = 1.0
    fps: float = 10.0
    width: int = 320
    height: int = 180


@dataclass
class DemoConfig:
    """What the demo runs: data, the pose and ReID experiment files (their data paths are filled in)."""
    out: str = "runs/demo"
    synth: DemoSynth = field(default_factory=DemoSynth)
    city: DemoCity = field(default_factory=DemoCity)
    pose_config: str = "configs/pose/demo.yaml"
    reid_baseline: str = "configs/reid/demo_rgb.yaml"
    reid_pose: str = "configs/reid/demo_pose.yaml"
    pose_overrides: list[str] = field(default_factory=list)
    reid_overrides: list[str] = field(default_factory=list)
    batch_size: int = 32  # inference batch for the cache
    # Wall-clock budget (minutes) for the whole run: the training epochs shrink to fit it on a slow CPU
    # (pipeline/budget.py); 0 = the experiment files' schedules whatever the machine.
    budget_minutes: float = 13.5
    min_pose_epochs: int = 8   # below ~8 epochs the pose model is too weak for pose to help ReID (docs/reid.md)
    min_reid_epochs: int = 4

    def validate(self) -> None:
        """Refuse renamed pose / ReID keys in the overrides now, not after the data set is generated."""
        if self.budget_minutes < 0 or self.min_pose_epochs < 1 or self.min_reid_epochs < 1:
            raise ConfigError("budget_minutes must be >= 0 and min_pose_epochs / min_reid_epochs >= 1")
        for key, cls, overrides in (("pose_overrides", PoseConfig, self.pose_overrides),
                                    ("reid_overrides", ReIDConfig, self.reid_overrides)):
            check_renamed(cls, parse_overrides(overrides), key)


def demo_config(path: str | Path | None = None, overrides: list[str] = (), out: str | None = None) -> DemoConfig:
    """``path`` (default: the repository's configs/demo.yaml) <- ``--set`` overrides; ``out`` replaces cfg.out."""
    cfg = load_config(DemoConfig, path or REPO / "configs" / "demo.yaml", overrides)
    if out:
        cfg.out = out
    return cfg


class Step:
    """Runs one ``pamtri`` command in this process, timing it; a failure stops the demo naming the step."""

    def __init__(self, timings: dict):
        self.timings = timings

    def __call__(self, name: str, argv: list[str]) -> None:
        log.info("demo step %s: pamtri %s", name, " ".join(argv))
        t0 = time.perf_counter()
        code = main(argv)
        self.timings[name] = round(time.perf_counter() - t0, 1)
        if code != 0:
            raise PamtriError(f"demo step '{name}' (pamtri {' '.join(argv)}) failed with exit code {code}")


def _flow(items: dict) -> str:
    """A YAML flow mapping for --set values."""
    return "{" + ", ".join(f"{k}: {v}" for k, v in items.items()) + "}"


def run_demo(cfg: DemoConfig, repo: Path | None = None) -> Path:
    """Run every step into ``<cfg.out>/<timestamp>/`` and return that folder (it holds report.md, index.html)."""
    repo = repo or Path.cwd()
    run = Path(cfg.out) / datetime.now().strftime("%Y%m%d-%H%M%S")
    run.mkdir(parents=True, exist_ok=False)
    save_config(cfg, run / "demo.yaml")
    timings: dict[str, float] = {}
    step = Step(timings)
    t_start = time.perf_counter()
    data = run / "data"
    s = cfg.synth
    step("synth", ["synth", "--out", str(data), "--seed", str(s.seed), "--ids", str(s.ids),
                   "--images-per-id", str(s.images_per_id), "--size", str(s.size), "--style", s.style,
                   "--cameras", str(s.cameras), "--test-fraction", str(s.test_fraction),
                   "--workers", str(s.workers), "--preview"])

    pose_dir = run / "pose"
    src = _flow({"root": str(data), "format": "synthetic", "split": "train"})
    val = _flow({"root": str(data), "format": "synthetic", "split": "test"})
    pose_set = [f"data.train=[{src}]", f"data.val=[{val}]"] + list(cfg.pose_overrides)
    budget = Budget(cfg.budget_minutes, t_start, data, repo / cfg.pose_config, repo / cfg.reid_pose,
                    cfg.min_pose_epochs, cfg.min_reid_epochs)
    pose_set += budget.pose_plan(pose_set, list(cfg.reid_overrides)).overrides()
    step("pose train", ["pose", "train", "--config", str(repo / cfg.pose_config), "--out", str(pose_dir)]
         + [x for o in pose_set for x in ("--set", o)])
    weights = pose_dir / "best.pt"
    step("pose eval", ["pose", "eval", "--weights", str(weights), "--data", str(data), "--split", "test",
                       "--format", "synthetic", "--out", str(pose_dir / "eval"), "--vis", "8"])

    caches = {split: run / "cache" / split for split in ("train", "query", "test")}
    for split, folder in caches.items():
        step(f"cache {split}", ["cache", "build", "--pose-weights", str(weights), "--data", str(data),
                                "--split", split, "--out", str(folder), "--batch-size", str(cfg.batch_size)])

    results = {}
    train_src = _flow({"root": str(data), "split": "train", "domain": "real", "pose_cache": str(caches["train"])})
    common = [f"data.train=[{train_src}]", f"data.eval_root={data}", f"data.query_cache={caches['query']}",
              f"data.gallery_cache={caches['test']}"] + list(cfg.reid_overrides)
    common += budget.reid_plan(common, timings["pose train"]).overrides()  # both variants: the same budget
    for label, config in (("baseline", cfg.reid_baseline), ("pose", cfg.reid_pose)):
        out = run / f"reid_{label}"
        sets = common
        step(f"reid train {label}", ["reid", "train", "--config", str(repo / config), "--out", str(out)]
             + [x for o in sets for x in ("--set", o)])
        step(f"reid eval {label}", ["reid", "eval", "--weights", str(out / "best.pt"), "--data", str(data),
                                    "--out", str(out / "eval")]
             + [x for o in sets[2:4] for x in ("--set", o)])
        results[label] = json.loads((out / "eval" / "metrics.json").read_text())
    if cfg.city.enabled:
        c = cfg.city
        step("synth city", ["synth", "city", "--out", str(run / "city"), "--seed", str(c.seed), "--cameras",
                            str(c.cameras), "--vehicles", str(c.vehicles), "--minutes", str(c.minutes), "--fps",
                            str(c.fps), "--width", str(c.width), "--height", str(c.height), "--no-progress"])
        step("mtmc run", ["mtmc", "run", "--scene", str(run / "city"), "--pose-weights", str(weights),
                          "--reid-weights", str(run / "reid_pose" / "best.pt"), "--out", str(run / "mtmc"),
                          "--no-progress"])
    timings["total"] = round(time.perf_counter() - t_start, 1)
    atomic_write_text(run / "budget.json", json.dumps(budget.summary(), indent=2) + "\n")
    write_report(run, cfg, results, timings, budget.summary())
    return run


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def write_report(run: Path, cfg: DemoConfig, results: dict, timings: dict, budget: dict | None = None) -> None:
    """report.md and index.html over the run's tables and figures (paths relative to the run folder), both
    rendered from one context with the templates ``demo_report.md`` and ``demo_report.html``."""

    pck = json.loads((run / "pose" / "eval" / "pck.json").read_text())
    table = pck["table"]
    pose_vals = [table[k] for k in PCK_GROUP_TITLES] + [table["mean"], table.get("mean@0.1")]
    names = {"baseline": "RGB only, MT (baseline)", "pose": "pose-aware, MT+K+H (cached heatmaps)"}
    rows = [[names[label]] + [_pct(r.get(k)) for k in ("mAP", "rank1", "rank5", "rank10", "mAP@100", "mINP",
                                                       "color_acc", "type_acc")] for label, r in results.items()]
    context = dict(
        run=run.name, synth=cfg.synth, timings=timings, budget_line=budget_line(budget),
        pck=dict(n_images=pck["n_images"], columns=list(PCK_GROUP_TITLES.values()) + ["Mean", "Mean@0.1"],
                 values=["n/a" if v is None else f"{v:.2f}" for v in pose_vals]),
        reid=dict(columns=["variant", "mAP", "rank-1", "rank-5", "rank-10", "rank-100 mAP", "mINP", "colour acc",
                           "type acc"], rows=rows),
        figures=dict(data=[_figure("generated samples with their keypoints and segments", "data/preview.png")],
                     pose=[_figure("PCK curve", "pose/eval/pck_curve.png"),
                           _figure("pose overlay", "pose/eval/vis.png")],
                     reid=[_figure("CMC", "cmc.png"), _figure("rank list", "reid_pose/eval/ranklist.png")]),
        city=city_summary(run) if (run / "mtmc" / "run.json").is_file() else None)
    plot_cmc_curves(results, run / "cmc.png")
    atomic_write_text(run / "report.md", render("demo_report.md", **context))
    atomic_write_text(run / "index.html", render("demo_report.html", **context))


def budget_line(budget: dict | None) -> str:
    """One sentence on the wall-clock budget and the epochs it left each training stage."""
    if not budget or not budget.get("minutes"):
        return "No time budget: the experiment files' schedules ran as written."
    stages = []
    for name, title in (("pose", "pose model"), ("reid", "each ReID model")):
        p = budget.get(name)
        if p:
            scaled = "as configured" if p["epochs"] == p["configured"] else "shortened to fit"
            stages.append(f"{title} {p['epochs']} of {p['configured']} epochs ({scaled}; "
                          f"timed step {p['step_s']:.2f} s)")
    return f"Budget {budget['minutes']:g} minutes on this machine: " + ", ".join(stages) + "."


def city_summary(run: Path) -> dict:
    """The city stage for the report: IDF1 / IDP / IDR, the OD matrix and the longest trip (from the files
    ``mtmc run`` wrote in ``run/mtmc``)."""
    import csv
    folder = run / "mtmc"
    m = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    flows = list(csv.DictReader((folder / "flows.csv").open(encoding="utf-8")))
    tracklets = list(csv.DictReader((folder / "tracklets.csv").open(encoding="utf-8")))
    cams = sorted({t["camera"] for t in tracklets})
    counts = {(f["origin"], f["destination"]): f["vehicles"] for f in flows}
    od = [[a] + [counts.get((a, b), "0") for b in cams] for a in cams]
    trips: dict[str, list[dict]] = {}
    for t in tracklets:
        trips.setdefault(t["global_id"], []).append(t)
    gid, legs = max(trips.items(), key=lambda kv: (len({t["camera"] for t in kv[1]}), -int(kv[0])),
                    default=("", []))
    legs = sorted(legs, key=lambda t: float(t["start_s"]))
    return dict(idf1=_pct(m.get("idf1")), idp=_pct(m.get("idp")), idr=_pct(m.get("idr")), cameras=cams, od=od,
                trip=dict(vehicle=gid, legs=[[t["camera"], t["start_s"], t["end_s"], t["color"], t["type"]]
                                             for t in legs]),
                report="mtmc/report.html")


def _figure(alt: str, src: str) -> dict:
    return {"alt": alt, "src": src}


def plot_cmc_curves(results: dict, path: Path) -> None:
    """Both variants' CMC curves in one PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5), dpi=120)
    for label, r in results.items():
        cmc = r["cmc"]
        ax.plot(range(1, len(cmc) + 1), [100 * c for c in cmc], label=f"{label} (mAP {100 * r['mAP']:.1f})")
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
