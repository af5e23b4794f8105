"""Parametric 3D vehicle bodies: one side profile per VeRi type, extruded across the width, with the
36 keypoints of ``pose.keypoints`` on the surface.

Vehicle frame (metres): x points forward (back bumper at -L/2, front bumper at +L/2), y to the vehicle's
left, z up; the ground is z = 0. The left side (keypoints 0-17) is at y > 0; the right side is its mirror
(keypoint k + 18 mirrors k).

The body is a closed, nearly convex polyhedron built from one side profile (x, z):
``10 back-bottom -> 11 back-upper -> 12 back-windshield base -> 13 roof rear -> 14 roof front ->
15 front-windshield base -> 16 front-upper -> 17 front-bottom``, closed along the bottom by the sill and
two wheel arches (keypoints 2-5 front arch, 6-9 rear arch). The lower side panel is that profile below
the belt line 12-15 at y = +-W/2; the greenhouse (12, 13, 14, 15) leans inwards (roof corners at
y = +-Wr/2, "tumblehome"). Each profile edge 10-11 ... 16-17 extruded across the width gives one of the
seven middle faces of the 13 segments of ``pose.segments`` (back face, trunk, back windshield, roof, front
windshield, hood, front face). Wheels are cylinders just inside the body side; the wheel-centre keypoints lie
at the centre of each tyre's outer face.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from pamtri.data.attributes import VERI_COLORS, VERI_TYPES
from pamtri.pose.keypoints import NUM_KEYPOINTS, NUM_SIDE

# Side keypoint indices (left side; right = +NUM_SIDE). The names are in pose.keypoints.KEYPOINT_NAMES;
# this module only needs the numbers to place them.
REAR_WHEEL, FRONT_WHEEL = 0, 1
FRONT_ARCH = (2, 3, 4, 5)   # front-bottom, front-upper, rear-upper, rear-bottom
REAR_ARCH = (6, 7, 8, 9)    # front-bottom, front-upper, rear-upper, rear-bottom
BACK_BOTTOM, BACK_UPPER, BACK_WS_BASE, ROOF_REAR, ROOF_FRONT, FRONT_WS_BASE, FRONT_UPPER, FRONT_BOTTOM = range(10, 18)
PROFILE = (BACK_BOTTOM, BACK_UPPER, BACK_WS_BASE, ROOF_REAR, ROOF_FRONT, FRONT_WS_BASE, FRONT_UPPER, FRONT_BOTTOM)
# The seven extruded faces, as (profile edge start, end, part name).
# Lower side-panel top chain: the profile without the roof (13, 14), which belongs to the greenhouse.
LOWER_CHAIN = (BACK_BOTTOM, BACK_UPPER, BACK_WS_BASE, FRONT_WS_BASE, FRONT_UPPER, FRONT_BOTTOM)
RIBBONS = ((BACK_BOTTOM, BACK_UPPER, "back_face"), (BACK_UPPER, BACK_WS_BASE, "trunk"),
           (BACK_WS_BASE, ROOF_REAR, "back_windshield"), (ROOF_REAR, ROOF_FRONT, "roof"),
           (ROOF_FRONT, FRONT_WS_BASE, "front_windshield"), (FRONT_WS_BASE, FRONT_UPPER, "hood"),
           (FRONT_UPPER, FRONT_BOTTOM, "front_face"))

# Nominal paint colours (RGB) of VeRi's 10 colour classes, in pamtri.data.attributes.VERI_COLORS order.
PAINT_RGB = {
    "yellow": (222, 188, 38), "orange": (232, 118, 28), "green": (46, 128, 60), "gray": (128, 131, 134),
    "red": (182, 24, 30), "blue": (32, 62, 156), "white": (236, 236, 232), "golden": (198, 168, 102),
    "brown": (108, 68, 40), "black": (24, 24, 27),
}
assert tuple(PAINT_RGB) == VERI_COLORS
# How often each type / colour is drawn for a new identity (roughly VeRi's mix; every class occurs).
TYPE_WEIGHTS = {"sedan": 0.26, "suv": 0.14, "van": 0.09, "hatchback": 0.10, "mpv": 0.10, "pickup": 0.07,
                "bus": 0.07, "truck": 0.09, "estate": 0.08}
COLOR_WEIGHTS = {"yellow": 0.08, "orange": 0.05, "green": 0.07, "gray": 0.13, "red": 0.12, "blue": 0.12,
                 "white": 0.17, "golden": 0.06, "brown": 0.06, "black": 0.14}
assert tuple(TYPE_WEIGHTS) == VERI_TYPES and tuple(COLOR_WEIGHTS) == VERI_COLORS

# Shape ranges per type, uniform [lo, hi]. Lengths in metres; x* are fractions of the length measured
# from the back bumper; z* are heights in metres; roof = roof width / body width; panes = side windows;
# pane = side-window region (u0, u1 along the greenhouse from back to front, v0, v1 from belt to roof);
# back_glass = rear-window region inside the back-windshield face (None: the whole face is glass).
_CAR = dict(arch=(1.15, 1.24), inset=(0.03, 0.06), pane=(0.05, 0.95, 0.10, 0.88), back_glass=None, bed=False)
TYPE_SHAPES: dict[str, dict] = {
    "sedan": dict(_CAR, L=(4.4, 5.0), W=(1.72, 1.88), H=(1.40, 1.50), r=(0.30, 0.34), c_back=(0.26, 0.36),
                  c_front=(0.18, 0.26), sill=(0.22, 0.30), wr=(0.19, 0.23), wf=(0.77, 0.81),
                  x11=(0.01, 0.03), x12=(0.15, 0.21), x13=(0.30, 0.36), x14=(0.58, 0.64), x15=(0.70, 0.75),
                  x16=(0.96, 0.985), z11=(0.95, 1.05), dz12=(0.00, 0.04), z15=(0.90, 0.98), z16=(0.72, 0.82),
                  roof=(0.80, 0.88), panes=(2, 2)),
    "suv": dict(_CAR, L=(4.4, 4.9), W=(1.82, 1.96), H=(1.65, 1.85), r=(0.34, 0.39), c_back=(0.40, 0.50),
                c_front=(0.35, 0.45), sill=(0.38, 0.48), wr=(0.17, 0.20), wf=(0.79, 0.82),
                x11=(0.0, 0.02), x12=(0.02, 0.05), x13=(0.06, 0.10), x14=(0.60, 0.66), x15=(0.73, 0.77),
                x16=(0.96, 0.98), z11=(1.00, 1.12), dz12=(0.03, 0.08), z15=(1.05, 1.15), z16=(0.95, 1.05),
                roof=(0.82, 0.90), panes=(3, 3), back_glass=(0.08, 0.92, 0.10, 0.85)),
    "van": dict(_CAR, L=(4.6, 5.4), W=(1.80, 2.00), H=(1.90, 2.30), r=(0.32, 0.36), c_back=(0.35, 0.45),
                c_front=(0.30, 0.40), sill=(0.35, 0.45), wr=(0.17, 0.20), wf=(0.81, 0.85),
                x11=(0.0, 0.005), x12=(0.005, 0.015), x13=(0.015, 0.03), x14=(0.82, 0.86), x15=(0.90, 0.93),
                x16=(0.975, 0.99), z11=(1.00, 1.15), dz12=(0.05, 0.12), z15=(1.10, 1.22), z16=(0.92, 1.02),
                roof=(0.90, 0.95), panes=(2, 4), pane=(0.04, 0.96, 0.12, 0.80), back_glass=(0.08, 0.92, 0.08, 0.55)),
    "hatchback": dict(_CAR, L=(3.7, 4.2), W=(1.65, 1.78), H=(1.42, 1.55), r=(0.28, 0.32), c_back=(0.28, 0.36),
                      c_front=(0.18, 0.26), sill=(0.22, 0.30), wr=(0.14, 0.18), wf=(0.80, 0.84),
                      x11=(0.0, 0.015), x12=(0.02, 0.05), x13=(0.10, 0.16), x14=(0.55, 0.60), x15=(0.70, 0.74),
                      x16=(0.95, 0.975), z11=(0.80, 0.90), dz12=(0.03, 0.08), z15=(0.88, 0.96), z16=(0.70, 0.80),
                      roof=(0.80, 0.88), panes=(2, 2), back_glass=(0.06, 0.94, 0.08, 0.92)),
    "mpv": dict(_CAR, L=(4.4, 5.1), W=(1.75, 1.90), H=(1.65, 1.80), r=(0.31, 0.34), c_back=(0.28, 0.36),
                c_front=(0.22, 0.30), sill=(0.26, 0.34), wr=(0.15, 0.19), wf=(0.81, 0.85),
                x11=(0.0, 0.015), x12=(0.015, 0.035), x13=(0.04, 0.07), x14=(0.70, 0.76), x15=(0.82, 0.86),
                x16=(0.965, 0.985), z11=(0.95, 1.05), dz12=(0.03, 0.08), z15=(0.98, 1.06), z16=(0.82, 0.92),
                roof=(0.82, 0.90), panes=(3, 3), back_glass=(0.06, 0.94, 0.08, 0.85)),
    "pickup": dict(_CAR, L=(5.0, 5.5), W=(1.82, 1.95), H=(1.75, 1.90), r=(0.36, 0.40), c_back=(0.45, 0.60),
                   c_front=(0.38, 0.48), sill=(0.42, 0.52), wr=(0.14, 0.18), wf=(0.80, 0.84),
                   x11=(0.0, 0.01), x12=(0.32, 0.38), x13=(0.34, 0.40), x14=(0.55, 0.60), x15=(0.67, 0.71),
                   x16=(0.96, 0.98), z11=(1.05, 1.20), dz12=(0.00, 0.06), z15=(1.15, 1.28), z16=(1.00, 1.12),
                   roof=(0.88, 0.94), panes=(2, 2), back_glass=(0.15, 0.85, 0.15, 0.60), bed=True),
    "bus": dict(_CAR, L=(9.5, 12.0), W=(2.40, 2.55), H=(2.90, 3.40), r=(0.46, 0.52), arch=(1.10, 1.18),
                inset=(0.05, 0.08), c_back=(0.35, 0.50), c_front=(0.30, 0.45), sill=(0.30, 0.45),
                wr=(0.22, 0.30), wf=(0.84, 0.88), x11=(0.0, 0.0), x12=(0.001, 0.003), x13=(0.004, 0.008),
                x14=(0.975, 0.985), x15=(0.992, 0.995), x16=(0.997, 0.999), z11=(1.10, 1.40),
                dz12=(0.02, 0.05), z15=(1.25, 1.45), z16=(1.15, 1.35), roof=(0.96, 0.99), panes=(6, 9),
                pane=(0.02, 0.98, 0.15, 0.90), back_glass=(0.10, 0.90, 0.10, 0.60)),
    "truck": dict(_CAR, L=(6.0, 8.5), W=(2.25, 2.50), H=(2.80, 3.30), r=(0.46, 0.53), arch=(1.10, 1.20),
                  inset=(0.05, 0.08), c_back=(0.55, 0.75), c_front=(0.45, 0.60), sill=(0.55, 0.70),
                  wr=(0.18, 0.28), wf=(0.85, 0.89), x11=(0.0, 0.005), x12=(0.70, 0.76), x13=(0.71, 0.77),
                  x14=(0.93, 0.955), x15=(0.985, 0.990), x16=(0.994, 0.998), z11=(1.70, 2.30),
                  dz12=(0.0, 0.0), z15=(1.45, 1.65), z16=(1.35, 1.55), roof=(0.95, 0.99), panes=(1, 1),
                  pane=(0.55, 0.97, 0.35, 0.92), back_glass=(0.30, 0.70, 0.10, 0.40), bed=True),
    "estate": dict(_CAR, L=(4.55, 4.95), W=(1.75, 1.86), H=(1.45, 1.55), r=(0.30, 0.34), c_back=(0.28, 0.36),
                   c_front=(0.18, 0.26), sill=(0.22, 0.30), wr=(0.18, 0.21), wf=(0.79, 0.82),
                   x11=(0.0, 0.015), x12=(0.02, 0.04), x13=(0.05, 0.09), x14=(0.60, 0.65), x15=(0.72, 0.76),
                   x16=(0.96, 0.985), z11=(0.88, 0.98), dz12=(0.02, 0.06), z15=(0.90, 0.98), z16=(0.72, 0.80),
                   roof=(0.82, 0.88), panes=(3, 3), back_glass=(0.06, 0.94, 0.08, 0.90)),
}
assert tuple(TYPE_SHAPES) == VERI_TYPES

_SHAPE_KEYS = ("L", "W", "H", "r", "arch", "inset", "c_back", "c_front", "sill", "wr", "wf",
               "x11", "x12", "x13", "x14", "x15", "x16", "z11", "dz12", "z15", "z16", "roof")


@dataclass(frozen=True)
class Identity:
    """One synthetic vehicle identity: a model (type + shape) and a paint; hashable, so bodies can be cached.

    ``shape`` holds the sampled values of ``_SHAPE_KEYS`` (metres / fractions, see TYPE_SHAPES); colours are
    RGB 0-255. ``color_id`` / ``type_id`` are 0-based into VERI_COLORS / VERI_TYPES.
    """
    type_id: int
    color_id: int
    shape: tuple[float, ...]
    panes: int
    paint: tuple[float, float, float]
    roof_paint: tuple[float, float, float]
    trim: tuple[float, float, float]          # stripe / livery / tarp colour
    stripe: bool
    rim: tuple[float, float, float]
    glass: tuple[float, float, float]
    plate: tuple[float, float, float]
    lamp: tuple[float, float]                 # headlight width, height as fractions of the front face
    cargo_pane: bool                          # vans: windows only beside the driver

    @property
    def type_name(self) -> str:
        return VERI_TYPES[self.type_id]

    def params(self) -> dict[str, float]:
        """The shape as a dict (metres / fractions, keys of TYPE_SHAPES)."""
        return dict(zip(_SHAPE_KEYS, self.shape))

    def to_dict(self) -> dict:
        """Plain-JSON form (for logs and synth.json-style dumps)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["shape"] = self.params()
        return d


def _u(rng: np.random.Generator, lo_hi) -> float:
    lo, hi = lo_hi
    return float(lo + (hi - lo) * rng.random())


def _jitter_rgb(rng: np.random.Generator, rgb, spread: float) -> tuple[float, float, float]:
    base = np.asarray(rgb, dtype=np.float64)
    out = base * (1.0 + rng.uniform(-0.08, 0.06)) + rng.normal(0.0, spread, 3)
    return tuple(float(v) for v in np.clip(out, 0.0, 255.0))


def make_identity(rng: np.random.Generator, type_id: int | None = None, color_id: int | None = None) -> Identity:
    """Draw a random identity (type, shape, paint and details) from ``rng``; type/colour may be forced (0-based)."""
    if type_id is None:
        w = np.asarray(list(TYPE_WEIGHTS.values()))
        type_id = int(rng.choice(len(VERI_TYPES), p=w / w.sum()))
    if color_id is None:
        w = np.asarray(list(COLOR_WEIGHTS.values()))
        color_id = int(rng.choice(len(VERI_COLORS), p=w / w.sum()))
    spec = TYPE_SHAPES[VERI_TYPES[type_id]]
    shape = tuple(_u(rng, spec[k]) for k in _SHAPE_KEYS)
    lo, hi = spec["panes"]
    panes = int(rng.integers(lo, hi + 1))
    paint = _jitter_rgb(rng, PAINT_RGB[VERI_COLORS[color_id]], 6.0)
    two_tone = rng.random() < 0.12
    roof_paint = _jitter_rgb(rng, (20, 20, 22) if rng.random() < 0.7 else (235, 235, 235), 4.0) if two_tone else paint
    trim = tuple(float(v) for v in rng.uniform(20, 235, 3))
    stripe = bool(rng.random() < (0.5 if VERI_TYPES[type_id] in ("bus", "truck") else 0.08))
    rim = _jitter_rgb(rng, ((190, 192, 196), (60, 62, 66), (25, 25, 25))[int(rng.integers(3))], 6.0)
    glass = _jitter_rgb(rng, (34, 44, 56), 5.0)
    yellow_plate = VERI_TYPES[type_id] in ("bus", "truck") or rng.random() < 0.08
    plate = (235.0, 190.0, 30.0) if yellow_plate else (30.0, 70.0, 200.0)
    lamp = (_u(rng, (0.10, 0.22)), _u(rng, (0.12, 0.30)))
    cargo_pane = bool(VERI_TYPES[type_id] == "van" and rng.random() < 0.3)
    return Identity(type_id, int(color_id), shape, panes, paint, roof_paint, trim, stripe, rim, glass, plate,
                    lamp, cargo_pane)


# Materials: index -> (ambient, diffuse, specular, shininess). Colours are per polygon.
PAINT, GLASS, TYRE, RIM, LAMP, DARK, PLATE = range(7)
MATERIALS = np.array([
    (0.50, 0.55, 0.35, 24.0),   # paint
    (0.75, 0.20, 0.70, 40.0),   # glass (reflects the sky)
    (0.80, 0.20, 0.05, 4.0),    # tyre
    (0.55, 0.45, 0.40, 16.0),   # rim
    (0.95, 0.10, 0.20, 8.0),    # lamp (bright, barely shaded)
    (0.70, 0.30, 0.05, 4.0),    # dark trim, grille, cargo
    (0.80, 0.25, 0.05, 4.0),    # number plate
])


@dataclass
class Body:
    """A pose-independent vehicle mesh ready to render; all arrays in the vehicle frame (metres).

    verts (V, 3); starts (P,) / counts (P,) index each polygon's vertices in ``verts``; normals (P, 3) outward
    unit normals; parent (P,) -1 for surfaces, else the surface an inset lies on (drawn right after it);
    wheel (P,) 1 for wheel parts (drawn before the body, tyres as convex hulls); hull (P,) draw the convex
    hull of the vertices; always (P,) never culled; rgb (P, 3); material (P,); names (P,) part names;
    member (P, 36) bool: keypoint k lies on polygon p; keypoints (36, 3); dims (L, W, H).
    """
    verts: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    normals: np.ndarray
    parent: np.ndarray
    wheel: np.ndarray
    group: np.ndarray         # (P,) wheel parts: index of their tyre (a wheel is drawn as one unit), else -1
    hull: np.ndarray
    always: np.ndarray
    rgb: np.ndarray
    material: np.ndarray
    names: tuple[str, ...]
    member: np.ndarray
    keypoints: np.ndarray
    dims: tuple[float, float, float]
    ref: np.ndarray           # (P, 3) a point on each polygon's plane (centroid) for culling


class _Builder:
    def __init__(self):
        self.polys: list[np.ndarray] = []
        self.meta: list[dict] = []

    def add(self, pts, normal, name, rgb, material, parent=-1, kps=(), wheel=False, hull=False, always=False,
            group=-1) -> int:
        self.polys.append(np.asarray(pts, dtype=np.float64))
        self.meta.append(dict(normal=np.asarray(normal, dtype=np.float64), name=name, rgb=rgb, material=material,
                              parent=parent, kps=tuple(kps), wheel=wheel, hull=hull, always=always, group=group))
        return len(self.polys) - 1


def _arc(cx: float, cz: float, radius: float, a0: float, a1: float, keys: tuple[float, ...], n: int) -> np.ndarray:
    """(m, 2) points (x, z) on a circle from angle a0 to a1 (degrees, 0 = +x, 90 = up) including ``keys``."""
    angles = np.union1d(np.linspace(a0, a1, n), np.asarray(keys, dtype=np.float64))
    angles = angles if a1 >= a0 else angles[::-1]
    rad = np.deg2rad(angles)
    return np.stack([cx + radius * np.cos(rad), cz + radius * np.sin(rad)], axis=1)


def _quad_point(q: np.ndarray, u: float, v: float) -> np.ndarray:
    """Bilinear point of quad q = (a, b, c, d): u from edge a-b to edge d-c, v from a (d) to b (c)."""
    a, b, c, d = q
    return (1 - u) * ((1 - v) * a + v * b) + u * ((1 - v) * d + v * c)


def _sub_quad(q: np.ndarray, u0: float, u1: float, v0: float, v1: float) -> np.ndarray:
    return np.stack([_quad_point(q, u0, v0), _quad_point(q, u0, v1), _quad_point(q, u1, v1), _quad_point(q, u1, v0)])


def _profile(p: dict) -> tuple[dict[int, np.ndarray], dict]:
    """Side-profile points (x, z) of the left side keyed by side keypoint index, plus wheel geometry."""
    L, H = p["L"], p["H"]
    x = lambda f: -L / 2 + f * L  # noqa: E731
    # Keep the profile's x order strictly increasing (sampled ranges may overlap by a hair).
    xs = np.maximum.accumulate(np.array([p["x11"], p["x12"], p["x13"], p["x14"], p["x15"], p["x16"]]))
    xs = xs + np.arange(6) * 1e-3
    z12 = p["z11"] + p["dz12"]
    pts = {
        BACK_BOTTOM: (x(0.0), p["c_back"]), BACK_UPPER: (x(xs[0]), p["z11"]), BACK_WS_BASE: (x(xs[1]), z12),
        ROOF_REAR: (x(xs[2]), H), ROOF_FRONT: (x(xs[3]), H), FRONT_WS_BASE: (x(xs[4]), p["z15"]),
        FRONT_UPPER: (x(min(xs[5], 0.999)), p["z16"]), FRONT_BOTTOM: (x(1.0), p["c_front"]),
    }
    # Lower-panel top chain (10, 11, 12, 15, 16, 17): the arches must stay under it.
    chain = np.array([pts[k] for k in LOWER_CHAIN])
    r, sill = p["r"], p["sill"]
    wheels = {}
    for key, frac in ((REAR_WHEEL, p["wr"]), (FRONT_WHEEL, p["wf"])):
        cx = x(frac)
        top = float(np.interp(cx, chain[:, 0], chain[:, 1]))
        ra = min(p["arch"] * r, top - 0.06 - r)
        ra = max(ra, abs(sill - r) + 0.04, 1.02 * r)
        dz = sill - r
        dx = float(np.sqrt(max(ra * ra - dz * dz, 1e-6)))
        # keep each arch off the bumpers
        cx = float(np.clip(cx, -L / 2 + dx + 0.08, L / 2 - dx - 0.08))
        wheels[key] = dict(cx=cx, ra=ra, dx=dx, a0=float(np.degrees(np.arctan2(dz, dx))))
    return {k: np.asarray(v) for k, v in pts.items()}, wheels


def _side_keypoints(prof: dict[int, np.ndarray], wheels: dict, p: dict) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """(left-side keypoints 0-17 (3,) in the vehicle frame, the lower side panel's outline (m, 2) (x, z): its top
    chain back to front, then the bottom front to back over both arches)."""
    half, roof_half, r = p["W"] / 2, p["W"] * p["roof"] / 2, p["r"]
    y_of = {k: (roof_half if k in (ROOF_REAR, ROOF_FRONT) else half) for k in PROFILE}
    side_kps = {k: np.array([prof[k][0], y_of[k], prof[k][1]]) for k in PROFILE}
    outline = [prof[k] for k in LOWER_CHAIN]
    for key, arch in ((FRONT_WHEEL, FRONT_ARCH), (REAR_WHEEL, REAR_ARCH)):
        w = wheels[key]
        a0 = w["a0"]
        outline.extend(_arc(w["cx"], r, w["ra"], a0, 180.0 - a0, (45.0, 135.0), 9))
        # arch keypoints: front-bottom, front-upper (45 deg), rear-upper (135 deg), rear-bottom
        for k, ang in zip(arch, (a0, 45.0, 135.0, 180.0 - a0)):
            rad = np.deg2rad(ang)
            side_kps[k] = np.array([w["cx"] + w["ra"] * np.cos(rad), half, r + w["ra"] * np.sin(rad)])
        side_kps[key] = np.array([w["cx"], half - p["inset"], r])
    return side_kps, np.asarray(outline)


def _add_greenhouse(b: _Builder, ident: Identity, side_kps: dict[int, np.ndarray]) -> None:
    """The left greenhouse (12, 13, 14, 15), leaning inwards, with its side windows as insets."""
    gh = np.stack([side_kps[k] for k in (BACK_WS_BASE, ROOF_REAR, ROOF_FRONT, FRONT_WS_BASE)])
    gh_n = np.cross(gh[2] - gh[0], gh[1] - gh[3])
    gh_n = gh_n / np.linalg.norm(gh_n) * np.sign(gh_n[1])
    greenhouse = b.add(gh, gh_n, "greenhouse", np.asarray(ident.paint), PAINT,
                       kps=(BACK_WS_BASE, ROOF_REAR, ROOF_FRONT, FRONT_WS_BASE))
    # side windows: panes along the greenhouse, u from back (12-13) to front (15-14), v from belt to roof
    u0, u1, v0, v1 = TYPE_SHAPES[ident.type_name]["pane"]
    if ident.cargo_pane:
        u0 = 0.72
    n = max(ident.panes, 1)
    pillar = 0.035 if n <= 3 else 0.012
    edges = np.linspace(u0, u1, n + 1)
    for i in range(n):
        a, c = edges[i] + (pillar if i else 0.0), edges[i + 1] - (pillar if i < n - 1 else 0.0)
        pane = np.stack([_qp(gh, a, v0), _qp(gh, a, v1), _qp(gh, c, v1), _qp(gh, c, v0)])
        b.add(pane, gh_n, "side_window", ident.glass, GLASS, parent=greenhouse)


def _add_side_trim(b: _Builder, ident: Identity, p: dict, prof: dict[int, np.ndarray], wheels: dict,
                   lower: int) -> None:
    """On the left lower panel ``lower``: the stripe / bus livery band between the arch tops and the belt, and
    a door seam (a thin dark band near the middle, cars only)."""
    L, half, r, type_name = p["L"], p["W"] / 2, p["r"], ident.type_name
    arch_top = max(r + wheels[k]["ra"] for k in (FRONT_WHEEL, REAR_WHEEL))
    belt = min(prof[k][1] for k in (BACK_UPPER, BACK_WS_BASE, FRONT_WS_BASE, FRONT_UPPER))
    if ident.stripe and belt - arch_top > 0.12:
        z0 = arch_top + 0.35 * (belt - arch_top)
        z1 = z0 + min(0.12 if type_name not in ("bus", "truck") else 0.30, 0.4 * (belt - arch_top))
        xa, xb = prof[BACK_UPPER][0] + 0.03 * L, prof[FRONT_UPPER][0] - 0.03 * L
        stripe = np.array([[xa, half, z0], [xa, half, z1], [xb, half, z1], [xb, half, z0]])
        b.add(stripe, (0, 1, 0), "stripe", ident.trim, PAINT, parent=lower)
    if type_name not in ("bus", "truck") and belt - (r + 0.05) > 0.2:
        xd = 0.5 * (prof[ROOF_REAR][0] + prof[ROOF_FRONT][0])
        zb, zt = p["sill"] + 0.03, belt - 0.03
        seam = np.array([[xd - 0.012, half, zb], [xd - 0.012, half, zt],
                         [xd + 0.012, half, zt], [xd + 0.012, half, zb]])
        b.add(seam, (0, 1, 0), "door_seam", np.asarray(ident.paint) * 0.45, DARK, parent=lower)


def _add_wheels(b: _Builder, ident: Identity, p: dict, wheels: dict) -> None:
    """Both left wheels, each drawn as one unit: dark wheel well, tyre (a cylinder drawn as the hull of both
    rims), rim and hub; the wheel-centre keypoint lies on the rim and hub."""
    W, r = p["W"], p["r"]
    wheel_y_out = W / 2 - p["inset"]
    for key in (REAR_WHEEL, FRONT_WHEEL):
        cx = wheels[key]["cx"]
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ring = np.stack([np.cos(ang), np.sin(ang)], axis=1)
        tyre_w = 0.16 + 0.1 * (W - 1.7)
        # dark wheel well behind the tyre: what the arch opening shows around the wheel
        w = wheels[key]
        well = _arc(cx, r, w["ra"] * 1.03, w["a0"] - 8.0, 188.0 - w["a0"], (), 10)
        well = np.column_stack([well[:, 0], np.full(len(well), wheel_y_out - tyre_w - 0.05), well[:, 1]])
        tyre_id = len(b.polys) + 1
        b.add(well, (0, 1, 0), "wheel_well", (18, 18, 20), DARK, wheel=True, group=tyre_id)
        outer = np.column_stack([cx + r * ring[:, 0], np.full(16, wheel_y_out), r + r * ring[:, 1]])
        inner = outer.copy()
        inner[:, 1] = wheel_y_out - tyre_w
        # the wheel-centre keypoint is on the tyre's outer face: it counts as seen through the rim and hub
        # (culled when that face turns away), not through the tyre's silhouette (always drawn, for the far
        # wheels showing under the body)
        b.add(np.vstack([outer, inner]), (0, 1, 0), "tyre", (28, 28, 30), TYRE, wheel=True,
              hull=True, always=True, group=tyre_id)
        rim = np.column_stack([cx + 0.62 * r * ring[:, 0], np.full(16, wheel_y_out + 1e-3), r + 0.62 * r * ring[:, 1]])
        b.add(rim, (0, 1, 0), "rim", ident.rim, RIM, kps=(key,), wheel=True, group=tyre_id)
        hub = np.column_stack([cx + 0.16 * r * ring[::2, 0], np.full(8, wheel_y_out + 2e-3),
                               r + 0.16 * r * ring[::2, 1]])
        b.add(hub, (0, 1, 0), "hub", np.asarray(ident.rim) * 0.6, RIM, kps=(key,), wheel=True, group=tyre_id)


def _add_right_side(b: _Builder) -> None:
    """Mirror every polygon built so far (the left side) to the right: y -> -y, keypoint k -> k + 18."""
    n_left = len(b.polys)
    for i in range(n_left):
        pts = b.polys[i].copy()
        pts[:, 1] *= -1
        m = b.meta[i]
        normal = m["normal"] * np.array([1.0, -1.0, 1.0])
        parent = m["parent"] + n_left if m["parent"] >= 0 else -1
        b.add(pts[::-1], normal, m["name"], m["rgb"], m["material"], parent=parent,
              kps=tuple(k + NUM_SIDE for k in m["kps"]), wheel=m["wheel"], hull=m["hull"], always=m["always"],
              group=m["group"] + n_left if m["group"] >= 0 else -1)


def _add_ribbons(b: _Builder, ident: Identity, side_kps: dict[int, np.ndarray]) -> dict[str, int]:
    """The seven faces across the width, each a profile edge extruded from left to right -> part name: polygon."""
    paint = np.asarray(ident.paint)
    back_glass = TYPE_SHAPES[ident.type_name]["back_glass"]
    ribbon_ids = {}
    for a, c, name in RIBBONS:
        qa, qc = side_kps[a], side_kps[c]
        mir = np.array([1.0, -1.0, 1.0])
        quad = np.stack([qa, qc, qc * mir, qa * mir])
        dx, dz = qc[0] - qa[0], qc[2] - qa[2]
        normal = np.array([-dz, 0.0, dx])
        normal /= max(np.linalg.norm(normal), 1e-9)
        mat, rgb = PAINT, paint
        if name == "front_windshield" or (name == "back_windshield" and back_glass is None):
            mat, rgb = GLASS, np.asarray(ident.glass)
        elif name == "roof":
            rgb = np.asarray(ident.roof_paint)
        ribbon_ids[name] = b.add(quad, normal, name, rgb, mat, kps=(a, c, c + NUM_SIDE, a + NUM_SIDE))
    return ribbon_ids


def _add_front_details(b: _Builder, ident: Identity, face: int) -> None:
    """Headlights, bumper (cars), grille and plate as insets of the front face polygon ``face``."""
    fq = b.polys[face]  # (16, 17, 35, 34): a=16 top-left, b=17 bottom-left, c=35 bottom-right, d=34 top-right
    fn = b.meta[face]["normal"]
    big = ident.type_name in ("bus", "truck")
    lw, lh = ident.lamp
    if big:
        lh, lv0 = lh * 0.35, 0.62
    else:
        lv0 = 0.08
    for u0 in (0.03, 0.97 - lw):
        b.add(_sub_quad(fq, u0, u0 + lw, lv0, lv0 + lh), fn, "headlight", (245, 242, 225), LAMP, parent=face)
    if not big:
        b.add(_sub_quad(fq, 0.0, 1.0, 0.72, 1.0), fn, "bumper", np.asarray(ident.paint) * 0.72, PAINT, parent=face)
    grille_v = (0.10, 0.45) if not big else (0.25, 0.58)
    b.add(_sub_quad(fq, 0.30, 0.70, *grille_v), fn, "grille", (30, 30, 32), DARK, parent=face)
    plate_v = (0.62, 0.80) if not big else (0.82, 0.94)
    b.add(_sub_quad(fq, 0.40, 0.60, *plate_v), fn, "plate", ident.plate, PLATE, parent=face)


def _add_back_details(b: _Builder, ident: Identity, face: int) -> None:
    """Bumper, taillights and plate as insets of the back face polygon ``face``."""
    type_name = ident.type_name
    bq0 = b.polys[face]  # (10, 11, 29, 28)
    bq = np.stack([bq0[1], bq0[0], bq0[3], bq0[2]])  # a=11 top-left, b=10 bottom-left, c=28, d=29
    bn = b.meta[face]["normal"]
    b.add(_sub_quad(bq, 0.0, 1.0, 0.70 if type_name not in ("bus", "truck") else 0.85, 1.0), bn, "bumper",
          np.asarray(ident.paint) * 0.72 if type_name not in ("truck",) else (30, 30, 32), PAINT, parent=face)
    tall = type_name in ("bus", "truck", "van", "suv", "mpv")
    tv = (0.06, 0.30) if not tall else (0.10, 0.40)
    for u0 in (0.03, 0.83):
        b.add(_sub_quad(bq, u0, u0 + 0.14, *tv), bn, "taillight", (200, 20, 25), LAMP, parent=face)
    b.add(_sub_quad(bq, 0.40, 0.60, 0.45, 0.70), bn, "plate", ident.plate, PLATE, parent=face)


def _add_back_window(b: _Builder, ident: Identity, face: int) -> None:
    """The rear-window glass inset of the back-windshield face polygon ``face`` (12, 13, 31, 30)."""
    u0, u1, v0, v1 = TYPE_SHAPES[ident.type_name]["back_glass"]
    q = b.polys[face]  # a=12 (left, bottom), b=13 (left, top), c=31, d=30
    # u across the width (left->right), v from the roof (top) down to the base
    qq = np.stack([q[1], q[0], q[3], q[2]])  # a=13 top-left, b=12 bottom-left, c=30 bottom-right, d=31 top-right
    b.add(_sub_quad(qq, u0, u1, v0, v1), b.meta[face]["normal"], "back_window", ident.glass, GLASS, parent=face)


def _add_cargo(b: _Builder, ident: Identity, face: int) -> None:
    """The open bed's cargo (pickups, trucks) as an inset of the trunk face polygon ``face`` (11, 12, 30, 29)."""
    tq0 = b.polys[face]
    tq = np.stack([tq0[0], tq0[3], tq0[2], tq0[1]])  # (11, 29, 30, 12): u back->front, v across
    cargo = ident.trim if ident.type_name == "truck" else tuple(np.asarray(ident.paint) * 0.35)
    b.add(_sub_quad(tq, 0.05, 0.95, 0.03, 0.97), b.meta[face]["normal"], "cargo", cargo, DARK, parent=face)


def _packed(b: _Builder, side_kps: dict[int, np.ndarray], dims: tuple[float, float, float]) -> Body:
    """The Body of the polygons in ``b``, with all 36 keypoints (the left side's and their mirrors)."""
    counts = np.array([len(q) for q in b.polys], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    verts = np.vstack(b.polys)
    member = np.zeros((len(b.polys), NUM_KEYPOINTS), dtype=bool)
    for i, m in enumerate(b.meta):
        member[i, list(m["kps"])] = True
    kps = np.zeros((NUM_KEYPOINTS, 3))
    for k, v in side_kps.items():
        kps[k] = v
        kps[k + NUM_SIDE] = v * np.array([1.0, -1.0, 1.0])
    return Body(
        verts=verts, starts=starts, counts=counts,
        normals=np.stack([m["normal"] for m in b.meta]),
        parent=np.array([m["parent"] for m in b.meta], dtype=np.int64),
        wheel=np.array([m["wheel"] for m in b.meta], dtype=bool),
        group=np.array([m["group"] for m in b.meta], dtype=np.int64),
        hull=np.array([m["hull"] for m in b.meta], dtype=bool),
        always=np.array([m["always"] for m in b.meta], dtype=bool),
        rgb=np.array([np.asarray(m["rgb"], dtype=np.float64) for m in b.meta]),
        material=np.array([m["material"] for m in b.meta], dtype=np.int64),
        names=tuple(m["name"] for m in b.meta), member=member, keypoints=kps, dims=dims,
        ref=np.stack([q.mean(axis=0) for q in b.polys]),
    )


def build_body(ident: Identity) -> Body:
    """Build the mesh, materials and the 36 keypoints of ``ident`` (vehicle frame, metres).

    Polygons in drawing order: the left side (lower panel, greenhouse and windows, stripe, door seam, wheels),
    its mirror on the right, the seven faces across the width, then the insets of those faces.
    """
    p = ident.params()
    prof, wheels = _profile(p)
    side_kps, outline = _side_keypoints(prof, wheels, p)
    b = _Builder()
    half = p["W"] / 2
    panel = np.column_stack([outline[:, 0], np.full(len(outline), half), outline[:, 1]])
    lower = b.add(panel, (0, 1, 0), "side", np.asarray(ident.paint), PAINT, kps=FRONT_ARCH + REAR_ARCH + LOWER_CHAIN)
    _add_greenhouse(b, ident, side_kps)
    _add_side_trim(b, ident, p, prof, wheels, lower)
    _add_wheels(b, ident, p, wheels)
    _add_right_side(b)
    faces = _add_ribbons(b, ident, side_kps)
    if TYPE_SHAPES[ident.type_name]["back_glass"] is not None:  # vans, SUVs, pickups, ...
        _add_back_window(b, ident, faces["back_windshield"])
    _add_front_details(b, ident, faces["front_face"])
    _add_back_details(b, ident, faces["back_face"])
    if TYPE_SHAPES[ident.type_name]["bed"]:
        _add_cargo(b, ident, faces["trunk"])
    return _packed(b, side_kps, (p["L"], p["W"], p["H"]))


def _qp(q: np.ndarray, u: float, v: float) -> np.ndarray:
    """Point of the greenhouse quad (12, 13, 14, 15): u from back (12-13) to front (15-14), v from belt to roof."""
    bottom = (1 - u) * q[0] + u * q[3]
    top = (1 - u) * q[1] + u * q[2]
    return (1 - v) * bottom + v * top
