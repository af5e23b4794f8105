"""The 3-seed study's table (docs/reid.md): mean +- std over seeds of each arm's final evaluation.

    python scripts/study_table.py runs/study rs_synthetic rs_parts_synthetic ...
    python scripts/study_table.py runs/study --eval eval_w0 rs_parts_synthetic ...   # another evaluation folder

reads RUNS/<arm>-s<seed>/eval/metrics.json (`pamtri reid eval --weights RUN/best.pt --data data/study --out RUN/eval`:
the final weights evaluated with today's code, which also gives runs from before issue 25 their cross-view entries)
or else RUNS/<arm>-s<seed>/metrics.csv (its last row: the one evaluation after the last step). With ``--eval NAME``:
RUNS/<arm>-s<seed>/NAME/metrics.json only (e.g. eval_w0, written by `pamtri reid eval ... --set eval.part_weight=0
--out RUN/eval_w0`: the part-trained models ranked by the global distance alone).
"""
import csv
import json
import statistics
import sys
from pathlib import Path

KEYS = ("mAP", "rank1", "cross_view_mAP", "cross_view_rank1")


def final_metrics(run: Path, folder: str | None = None) -> dict:
    if folder is not None:
        return {k: float(v) for k, v in json.loads((run / folder / "metrics.json").read_text()).items() if k in KEYS}
    evaluated = run / "eval" / "metrics.json"
    if evaluated.exists():
        return {k: float(v) for k, v in json.loads(evaluated.read_text()).items() if k in KEYS}
    with open(run / "metrics.csv") as fh:
        last = list(csv.DictReader(fh))[-1]
    return {k: float(last[k]) for k in KEYS if last.get(k)}


def cell(values: list[float]) -> str:
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.2f} +- {100 * std:.2f}"


def main(root: str, arms: list[str], folder: str | None = None) -> None:
    print("| arm | seeds | mAP | rank-1 | cross-view mAP | cross-view rank-1 | per seed mAP / rank-1 / cross-view "
          "mAP |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for arm in arms:
        runs = sorted(p for p in Path(root).glob(f"{arm}-s*") if (p / "DONE").exists()
                      and (folder is None or (p / folder / "metrics.json").exists()))
        res = {p.name.rsplit("-s", 1)[1]: final_metrics(p, folder) for p in runs}
        cols = [cell([r[k] for r in res.values() if k in r]) for k in KEYS]
        seeds = ", ".join(f"s{s}: {100 * r['mAP']:.2f}/{100 * r['rank1']:.2f}/"
                          f"{100 * r.get('cross_view_mAP', float('nan')):.2f}" for s, r in res.items())
        print(f"| `{arm}` | {len(res)} | " + " | ".join(cols) + f" | {seeds} |")


if __name__ == "__main__":
    args = sys.argv[2:]
    eval_folder = None
    if args[:1] == ["--eval"]:
        eval_folder, args = args[1], args[2:]
    main(sys.argv[1], args, eval_folder)
