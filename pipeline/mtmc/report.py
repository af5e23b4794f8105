"""The MTMC HTML report's context: OD heatmap cells, travel-time histograms, example trips with their crops."""
from __future__ import annotations

import base64

import cv2
import numpy as np

from pamtri.data.attributes import VERI_COLORS, VERI_TYPES


def _data_uri(rgb: np.ndarray, height: int = 64) -> str:
    h, w = rgb.shape[:2]
    img = cv2.resize(rgb, (max(1, round(w * height / h)), height), interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def histogram(pair: str, times: list[float], bins: int = 12, width: int = 360) -> dict:
    lo, hi = float(min(times)), float(max(times))
    if hi - lo < 1e-6:
        hi = lo + 1.0
    counts, edges = np.histogram(times, bins=bins, range=(lo, hi))
    bw = width / bins
    top = max(1, int(counts.max()))
    bars = [dict(x=round(k * bw, 1), w=round(bw - 1, 1), h=round(55 * c / top, 1), y=round(58 - 55 * c / top, 1),
                 label=f"{edges[k]:.1f}-{edges[k + 1]:.1f} s: {c}") for k, c in enumerate(counts)]
    return dict(pair=pair, count=len(times), median=round(float(np.median(times)), 1), bars=bars, width=width,
                lo=round(lo, 1), hi=round(hi, 1))


def report_context(scene, tracklets, labels, flows, trips: int, metrics: dict | None, summary: dict) -> dict:
    """Everything ``mtmc_report.html`` shows."""
    names = [c.name for c in scene.cameras]
    ids = {c.id: c.name for c in scene.cameras}
    counts = {(f["origin"], f["destination"]): f["count"] for f in flows}
    top = max([1] + list(counts.values()))
    od = dict(cameras=names, rows=[dict(name=a, cells=[dict(count=counts.get((a, b), 0),
                                                            alpha=round(0.85 * counts.get((a, b), 0) / top, 3))
                                                       for b in names]) for a in names])
    hists = [histogram(f"{f['origin']} -> {f['destination']}", f["times"]) for f in flows if f["times"]]
    by_gid: dict[int, list] = {}
    for tl, g in zip(tracklets, labels):
        by_gid.setdefault(int(g), []).append(tl)
    multi = sorted(by_gid.items(), key=lambda kv: (-len({t.camera for t in kv[1]}), kv[0]))
    out_trips = []
    for gid, tls in multi[:trips]:
        if len({t.camera for t in tls}) < 2:
            break
        tls = sorted(tls, key=lambda t: t.start)
        color = next((t.color for t in tls if t.color >= 0), -1)
        vtype = next((t.type for t in tls if t.type >= 0), -1)
        out_trips.append(dict(global_id=gid + 1, color=VERI_COLORS[color] if color >= 0 else "colour ?",
                              type=VERI_TYPES[vtype] if vtype >= 0 else "type ?",
                              legs=[dict(camera=ids[t.camera], start=round(t.start, 1), end=round(t.end, 1),
                                         crops=[_data_uri(c) for c in t.crops[:3]]) for t in tls]))
    shown = None
    if metrics:
        shown = {k.upper(): f"{100 * metrics[k]:.1f}" if metrics.get(k) is not None else "n/a"
                 for k in ("idf1", "idp", "idr")}
        for cam, m in metrics["per_camera"].items():
            shown[f"MOTA {cam}"] = f"{100 * m['mota']:.1f}" if m.get("mota") is not None else "n/a"
    return dict(od=od, histograms=hists, trips=out_trips, metrics=shown, **summary)
