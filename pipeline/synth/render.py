"""Render one synthetic vehicle crop: camera, perspective projection, painter's-algorithm polygons, shading,
backgrounds, occluders, image degradations, and per-keypoint visibility from an id buffer.

Conventions
-----------
- Orientation (yaw, degrees in [0, 360)) is the camera's azimuth around the vehicle, counter-clockwise seen
  from above, measured from the vehicle's front: 0 = front view, 90 = the vehicle's left side faces the
  camera (its front points to the image left), 180 = rear view, 270 = right side view.
- Images are BGR uint8 (OpenCV order). Keypoints are (36, 3) float32: x, y in pixels of the returned image
  (pixel centres at integers), visibility 0/1.
- A keypoint is visible when it lies inside the image (0 <= x <= W-1, 0 <= y <= H-1) and one of the
  surfaces it lies on (an inset such as a window counts as its surface) is what the id buffer shows at its
  pixel or an 8-neighbour, so a keypoint on a back-facing (culled) side, behind nearer surfaces, or under
  an occluder is invisible.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from pamtri.pose.keypoints import NUM_KEYPOINTS

from .body import GLASS, MATERIALS, Body, Identity, build_body, make_identity

STYLES = ("synthetic", "realistic")
SHIFT = 4                     # fixed-point bits for cv2 polygon drawing
_ONE = 1 << SHIFT
OCCLUDER_ID = 255
_NEIGH = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.int64)  # (9, 2)


@dataclass(frozen=True)
class CameraProfile:
    """One camera of a generated data set: where vehicles are seen from, and how the camera renders colour.

    yaw_center None means orientations are uniform; otherwise yaw ~ center (or center + 180 when
    ``two_way``) + N(0, yaw_spread) degrees. elevation ~ N(elev_center, elev_spread) degrees. gain is the
    per-channel (B, G, R) colour cast; ground / scenery are the background palette (RGB).
    """
    camera_id: int = 0
    yaw_center: float | None = None
    yaw_spread: float = 180.0
    two_way: bool = True
    elev_center: float = 20.0
    elev_spread: float = 12.0
    gain: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ground: tuple[float, float, float] = (120.0, 120.0, 118.0)
    scenery: tuple[float, float, float] = (150.0, 160.0, 150.0)
    fov: float = 50.0


DEFAULT_CAMERA = CameraProfile()


def make_camera(rng: np.random.Generator, camera_id: int, style: str) -> CameraProfile:
    """Draw a camera's viewpoint distribution and colour cast (stronger casts for the realistic style)."""
    cast = 0.04 if style == "synthetic" else 0.12
    ground = rng.uniform(70, 170) + rng.normal(0, 6, 3)
    return CameraProfile(
        camera_id=camera_id,
        yaw_center=float(rng.uniform(0, 360)),
        yaw_spread=float(rng.uniform(15, 45)),
        two_way=bool(rng.random() < 0.7),
        elev_center=float(rng.uniform(8, 38)),
        elev_spread=float(rng.uniform(3, 8)),
        gain=tuple(float(g) for g in np.clip(1.0 + rng.normal(0, cast, 3), 0.6, 1.4)),
        ground=tuple(float(v) for v in np.clip(ground, 0, 255)),
        scenery=tuple(float(v) for v in rng.uniform(40, 220, 3)),
        fov=float(rng.uniform(35, 75)),
    )


@dataclass(frozen=True)
class View:
    """Everything random about one image except the identity. Angles in degrees, distance in metres.

    margins: (left, top, right, bottom) crop margins as fractions of the vehicle's box width / height
    (negative cuts into the vehicle); native: the vehicle's native resolution relative to the output
    (< 1: rendered small and upsampled); light_az / light_el: light direction in the vehicle frame;
    occluders: how many; bg: 'flat' | 'gradient' | 'road'; scene_seed: seeds the variable-count draws
    (clutter, occluder shapes, texture offsets).
    """
    yaw: float
    elevation: float
    distance: float
    roll: float
    off_h: float
    off_v: float
    margins: tuple[float, float, float, float]
    native: float
    light_az: float
    light_el: float
    light_gain: float
    gain: tuple[float, float, float]
    gamma: float
    contrast: float
    brightness: float
    blur: float
    noise: float
    jpeg_quality: int
    occluders: int
    bg: str
    scene_seed: int
    camera_id: int = 0


def _wrap360(deg: float) -> float:
    """Wrap to [0, 360) and round to 2 decimals (the label is the exact render parameter)."""
    d = round(float(deg) % 360.0, 2)
    return 0.0 if d >= 360.0 else d


def sample_view(rng: np.random.Generator, camera: CameraProfile, style: str, clean: bool = False,
                vehicle_length: float = 4.6) -> View:
    """Draw one image's view; always consumes the same random draws, so overrides never shift the rest.

    clean: no roll, no off-axis, symmetric margins, flat background, no occluders, blur, noise or cast
    (for tests that need a symmetric, deterministic setup).
    """
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose one of {STYLES}")
    real = style == "realistic"
    u = rng.random(24)
    n = rng.standard_normal(8)
    if camera.yaw_center is None:
        yaw = 360.0 * u[0]
    else:
        yaw = camera.yaw_center + (180.0 if camera.two_way and u[0] < 0.5 else 0.0) + camera.yaw_spread * n[0]
    elevation = float(np.clip(camera.elev_center + camera.elev_spread * n[1], 2.0, 65.0))
    distance = vehicle_length * (1.6 + 4.0 * u[1] ** 1.5)
    roll = 4.0 * n[2] if real else 2.0 * n[2]
    half_fov = camera.fov / 2
    off_h, off_v = 0.6 * half_fov * (2 * u[2] - 1), 0.5 * half_fov * (2 * u[3] - 1)
    if u[4] < (0.10 if real else 0.05):          # a crop that cuts into the vehicle on one side
        cut = -0.12 * u[5]
    else:
        cut = None
    margins = [0.02 + 0.14 * u[6], 0.02 + 0.14 * u[7], 0.02 + 0.14 * u[8], 0.02 + 0.14 * u[9]]
    if cut is not None:
        margins[int(u[10] * 4) % 4] = cut
    if real:
        native = 0.35 + 0.65 * u[11] if u[12] < 0.7 else 1.0
    else:
        native = 0.6 + 0.4 * u[11] if u[12] < 0.3 else 1.0
    cast = 0.05 if real else 0.02
    gain = tuple(float(g) for g in np.asarray(camera.gain) * (1.0 + cast * n[3:6]))
    view = View(
        yaw=_wrap360(yaw), elevation=round(elevation, 3), distance=float(distance), roll=float(roll),
        off_h=float(off_h), off_v=float(off_v), margins=tuple(float(m) for m in margins), native=float(native),
        light_az=360.0 * u[13], light_el=25.0 + 55.0 * u[14], light_gain=0.85 + 0.35 * u[15],
        gain=gain, gamma=float(0.8 + 0.45 * u[16]) if real else float(0.92 + 0.16 * u[16]),
        contrast=float(0.75 + 0.4 * u[17]) if real else float(0.92 + 0.16 * u[17]),
        brightness=float(40 * (u[18] - 0.5)) if real else float(12 * (u[18] - 0.5)),
        blur=float(1.4 * u[19]) if real and u[20] < 0.6 else (float(0.8 * u[19]) if u[20] < 0.2 else 0.0),
        noise=float(2 + 7 * u[21]) if real else float(1.5 * u[21]),
        jpeg_quality=int(50 + 40 * u[22]) if real else int(85 + 10 * u[22]),
        occluders=(int(u[23] < 0.35) + int(u[23] < 0.10)) if real else int(u[23] < 0.15),
        bg=("road" if real else ("flat" if u[20] < 0.5 else "gradient")),
        scene_seed=int(rng.integers(0, 2**62)), camera_id=camera.camera_id,
    )
    if clean:
        m = view.margins[0] if view.margins[0] > 0 else 0.08
        view = replace(view, roll=0.0, off_h=0.0, off_v=0.0, margins=(m, m, m, m), native=1.0, gain=(1.0, 1.0, 1.0),
                       gamma=1.0, contrast=1.0, brightness=0.0, blur=0.0, noise=0.0, occluders=0, bg="flat",
                       light_az=0.0)
    return view


# ---------------------------------------------------------------------------------------------------
# geometry

# ---------------------------------------------------------------------------------------------------
# geometry

def _unit(v: np.ndarray) -> np.ndarray:
    return v / math.sqrt(float(v @ v))


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def camera_pose(view: View, body: Body) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre (3,) and world-to-camera rotation (3, 3) (rows: right, down, forward) in the vehicle frame."""
    yaw, el = math.radians(view.yaw), math.radians(view.elevation)
    target = np.array([0.0, 0.0, 0.45 * body.dims[2]])
    direction = np.array([math.cos(el) * math.cos(yaw), math.cos(el) * math.sin(yaw), math.sin(el)])
    centre = target + view.distance * direction
    fwd = _unit(target - centre)
    right = _unit(_cross(fwd, np.array([0.0, 0.0, 1.0])))
    up = _cross(right, fwd)
    # the vehicle sits off the optical axis: turn the camera by (off_h, off_v), then roll it
    oh, ov, ro = math.radians(view.off_h), math.radians(view.off_v), math.radians(view.roll)
    fwd, right = math.cos(oh) * fwd + math.sin(oh) * right, math.cos(oh) * right - math.sin(oh) * fwd
    fwd, up = math.cos(ov) * fwd + math.sin(ov) * up, math.cos(ov) * up - math.sin(ov) * fwd
    right, up = math.cos(ro) * right + math.sin(ro) * up, math.cos(ro) * up - math.sin(ro) * right
    return centre, np.stack([right, -up, fwd])


def project(points: np.ndarray, centre: np.ndarray, rot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (N, 3) in the vehicle frame -> normalised image coordinates (N, 2) (x right, y down) and depth (N,)."""
    cam = (points - centre) @ rot.T
    z = np.maximum(cam[:, 2], 1e-6)
    return cam[:, :2] / z[:, None], cam[:, 2]


@dataclass(frozen=True)
class Crop:
    """Maps normalised image coordinates to output pixels: x = (u - cu) * scale + width / 2 - 0.5."""
    cu: float
    cv: float
    scale: float
    width: int
    height: int

    def apply(self, uv: np.ndarray) -> np.ndarray:
        """(N, 2) normalised coordinates -> (N, 2) output pixels (pixel centres at integers)."""
        return (uv - (self.cu, self.cv)) * self.scale + (self.width / 2 - 0.5, self.height / 2 - 0.5)


def frame_crop(uv: np.ndarray, margins, size: int) -> Crop:
    """Tight box of ``uv`` (N, 2) plus margins (fractions), resized so its longer side is ``size`` pixels."""
    x0, y0 = uv.min(axis=0)
    x1, y1 = uv.max(axis=0)
    bw, bh = x1 - x0, y1 - y0
    ml, mt, mr, mb = margins
    x0, x1 = x0 - ml * bw, x1 + mr * bw
    y0, y1 = y0 - mt * bh, y1 + mb * bh
    bw, bh = x1 - x0, y1 - y0
    if bw >= bh:
        width, height = size, max(16, int(round(size * bh / bw)))
    else:
        width, height = max(16, int(round(size * bw / bh))), size
    scale = min(width / bw, height / bh)
    return Crop(cu=float((x0 + x1) / 2), cv=float((y0 + y1) / 2), scale=float(scale), width=width, height=height)


# ---------------------------------------------------------------------------------------------------
# textures (fixed per process, so every worker draws the same pixels for the same offsets)

_TILE = 512


@functools.lru_cache(maxsize=1)
def _tiles() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(np.random.SeedSequence(20191027))
    n = _TILE

    def smooth(cells):
        small = rng.standard_normal((cells, cells)).astype(np.float32)
        small = np.pad(small, 2, mode="wrap")
        big = cv2.resize(small, ((cells + 4) * n // cells,) * 2, interpolation=cv2.INTER_CUBIC)
        o = 2 * n // cells
        t = big[o:o + n, o:o + n]
        return np.ascontiguousarray((t - t.mean()) / (t.std() + 1e-6))

    return {"coarse": smooth(12), "mid": smooth(48), "fine": rng.standard_normal((n, n)).astype(np.float32),
            "color": rng.standard_normal((n, n, 3)).astype(np.float32)}


def _tile_crop(name: str, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An (h, w[, 3]) window of a periodic noise tile at a random offset (wraps for canvases over 512 px)."""
    t = _tiles()[name]
    oy, ox = rng.integers(_TILE, size=2)
    if h <= _TILE and w <= _TILE:
        oy, ox = oy % (_TILE - h + 1), ox % (_TILE - w + 1)
        return t[oy:oy + h, ox:ox + w]
    return t[(np.arange(h) + oy) % _TILE][:, (np.arange(w) + ox) % _TILE]


def _background(h: int, w: int, view: View, camera: CameraProfile, rng: np.random.Generator) -> np.ndarray:
    """Float32 (h, w, 3) BGR background: flat colour, gradient, or a textured road."""
    ground = np.asarray(camera.ground[::-1], dtype=np.float32) * (0.8 + 0.4 * rng.random(3, dtype=np.float32))
    bg = np.empty((h, w, 3), dtype=np.float32)
    if view.bg == "flat":
        bg[:] = ground
        return bg
    t = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None, None]
    if view.bg == "gradient":
        other = np.asarray(camera.scenery[::-1], dtype=np.float32)
        bg[:] = ground * (1 - 0.5 * t) + other * (0.5 * t)
        bg += 6.0 * _tile_crop("coarse", h, w, rng)[..., None]
        return bg
    # road: multi-scale asphalt texture, colour speckle, light falloff across the frame
    tex = 14.0 * _tile_crop("coarse", h, w, rng)
    tex += 7.0 * _tile_crop("mid", h, w, rng)
    tex += 4.0 * _tile_crop("fine", h, w, rng)
    bg[:] = ground
    bg += tex[..., None]
    bg += 5.0 * _tile_crop("color", h, w, rng)
    bg *= 1.0 + 0.3 * float(rng.uniform(-1, 1)) * (t - 0.5)
    return bg


def _clutter(img: np.ndarray, camera: CameraProfile, rng: np.random.Generator) -> None:
    """Random scenery shapes (kerbs, signs, patches of other objects) painted into a BGR uint8 background."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(1, 6))):
        col = tuple(float(c) for c in np.clip(np.asarray(camera.scenery[::-1]) * rng.uniform(0.4, 1.3) +
                                              rng.normal(0, 35, 3), 0, 255))
        kind = rng.random()
        cx, cy = rng.uniform(-0.1, 1.1) * w, rng.uniform(-0.1, 1.1) * h
        s = rng.uniform(0.1, 0.5) * max(h, w)
        if kind < 0.5:
            ang = rng.uniform(0, np.pi)
            d = np.array([[np.cos(ang), np.sin(ang)], [-np.sin(ang), np.cos(ang)]])
            half = np.array([s, s * rng.uniform(0.05, 0.6)])
            pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half @ d + (cx, cy)
            cv2.fillConvexPoly(img, np.round(pts * _ONE).astype(np.int32), col, cv2.LINE_AA, SHIFT)
        else:
            cv2.ellipse(img, ((float(cx), float(cy)), (float(s * 0.6), float(s * rng.uniform(0.2, 0.6))),
                              float(rng.uniform(0, 180))), col, -1, cv2.LINE_AA)


# ---------------------------------------------------------------------------------------------------
# rendering

@dataclass
class _Prepared:
    """Per-identity render tables (cached): the body plus Python-side lists that keep the draw loop cheap."""
    body: Body
    member: np.ndarray            # (256, 36) bool, indexed by id-buffer value
    spans: list                   # (start, stop) vertex slice per polygon
    concave: list                 # fillPoly instead of fillConvexPoly
    hull: list
    children: list                # insets of each surface, in drawing order
    surface_or_self: np.ndarray   # (P,) the surface an inset lies on, or the polygon itself
    wheels: np.ndarray            # indices of wheel parts
    surfaces: np.ndarray          # indices of body surfaces (not wheels, not insets)
    material_ambient: np.ndarray
    material_diffuse: np.ndarray
    material_spec: np.ndarray
    material_shine: np.ndarray
    sky: np.ndarray


@functools.lru_cache(maxsize=1024)
def _prepared(ident: Identity) -> _Prepared:
    body = build_body(ident)
    top = body.parent < 0
    surface_or_self = np.where(top, np.arange(len(top)), body.parent)
    member = np.zeros((256, NUM_KEYPOINTS), dtype=bool)
    # an inset lies on its surface, so where it shows, the surface's keypoints show
    member[1:1 + len(top)] = body.member[surface_or_self]
    children = [[] for _ in top]
    for c in np.flatnonzero(~top):
        children[int(body.parent[c])].append(int(c))
    mat = MATERIALS[body.material]
    return _Prepared(
        body=body, member=member,
        spans=[(int(s), int(s + n)) for s, n in zip(body.starts, body.counts)],
        concave=[n == "side" for n in body.names], hull=body.hull.tolist(), children=children,
        surface_or_self=surface_or_self, wheels=np.flatnonzero(body.wheel), surfaces=np.flatnonzero(top & ~body.wheel),
        material_ambient=mat[:, 0], material_diffuse=mat[:, 1], material_spec=mat[:, 2] * 200.0,
        material_shine=mat[:, 3], sky=(body.material == GLASS) * np.clip(body.normals[:, 2], 0, None) * 55.0,
    )


def _shade(prep: _Prepared, centre: np.ndarray, view: View) -> np.ndarray:
    """Per-polygon BGR colour (P, 3) float: ambient + Lambert + Blinn-Phong highlight + sky reflection on glass."""
    body = prep.body
    az, el = math.radians(view.light_az), math.radians(view.light_el)
    light = np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    n = body.normals
    to_cam = centre - body.ref
    to_cam /= np.sqrt((to_cam * to_cam).sum(axis=1))[:, None]
    half = to_cam + light
    half /= np.sqrt((half * half).sum(axis=1))[:, None]
    lambert = np.maximum(n @ light, 0.0)
    spec = np.maximum((n * half).sum(axis=1), 0.0) ** prep.material_shine
    col = body.rgb[:, ::-1] * ((prep.material_ambient + prep.material_diffuse * lambert) * view.light_gain)[:, None]
    col += (prep.material_spec * spec + prep.sky)[:, None]
    return np.minimum(col, 255.0)


def render_view(ident: Identity, view: View, size: int = 128, camera: CameraProfile = DEFAULT_CAMERA,
                with_buffers: bool = False) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render ``ident`` seen through ``view``: BGR uint8 (H, W, 3) with the longer side ``size``, keypoints (36, 3)
    float32 (x, y pixels, visibility), and a meta dict (width, height, orientation_deg, ...; with ``with_buffers``
    also 'mask' (H, W) bool vehicle pixels, 'parts' (H, W) uint8 surface index + 1 (insets count as their surface,
    255 = occluder) and 'part_names').

    Drawn at the view's native resolution, in painter's order: ground, shadow and clutter, then the vehicle far
    to near, then occluders; one random stream (``view.scene_seed``) feeds every step in that order.
    """
    prep = _prepared(ident)
    body = prep.body
    rng = np.random.default_rng(view.scene_seed)
    centre, rot = camera_pose(view, body)
    uv, depth = project(body.verts, centre, rot)
    kuv, _ = project(body.keypoints, centre, rot)
    crop = frame_crop(uv, view.margins, size)
    W, H = crop.width, crop.height
    Wr, Hr = (max(8, int(round(W * view.native))), max(8, int(round(H * view.native)))) if view.native < 1 else (W, H)
    # output pixels -> render pixels (pixel centres at integers in both)
    to_r = np.array([Wr / W, Hr / H])

    def to_render_px(p_uv):
        return (crop.apply(p_uv) + 0.5) * to_r - 0.5

    img = _scene(body, view, camera, centre, rot, to_render_px, (Hr, Wr), rng)
    ids = np.zeros((Hr, Wr), dtype=np.uint8)
    _draw_vehicle(img, ids, prep, np.round(to_render_px(uv) * _ONE).astype(np.int32), depth, centre, view)
    for _ in range(view.occluders):
        _occluder(img, ids, rng)
    kps = _visible_keypoints(crop.apply(kuv), ids, prep, (W, H), to_r)
    if (Wr, Hr) != (W, H):
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_LINEAR)
    img = _camera_effects(img, view, rng)
    meta = dict(width=W, height=H, orientation_deg=view.yaw, elevation_deg=view.elevation, camera_id=view.camera_id,
                type_id=ident.type_id, color_id=ident.color_id, jpeg_quality=view.jpeg_quality, native=view.native)
    if with_buffers:
        parts = ids if (Wr, Hr) == (W, H) else cv2.resize(ids, (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
        meta["parts"] = parts
        meta["mask"] = (parts > 0) & (parts != OCCLUDER_ID)
        meta["part_names"] = body.names
    return img, kps, meta


def _scene(body, view: View, camera: CameraProfile, centre, rot, to_render_px, shape: tuple[int, int],
           rng: np.random.Generator) -> np.ndarray:
    """BGR uint8 (Hr, Wr, 3) render-size scene without the vehicle: background, lane markings (road), the car's
    shadow on the ground, clutter (road)."""
    Hr, Wr = shape
    bg = _background(Hr, Wr, view, camera, rng)
    L, Wd, Hv = body.dims
    az, el = math.radians(view.light_az), math.radians(view.light_el)
    shift = -np.array([math.cos(az), math.sin(az)]) * (0.35 * Hv / max(math.tan(el), 0.3))
    foot = np.array([[-L / 2 - 0.1, -Wd / 2 - 0.08], [L / 2 + 0.1, -Wd / 2 - 0.08],
                     [L / 2 + 0.1, Wd / 2 + 0.08], [-L / 2 - 0.1, Wd / 2 + 0.08]])
    quads = [foot, foot + shift * 0.5]
    if view.bg == "road":
        # dashed lane markings parallel to the vehicle, 0.15 m wide, in perspective on the ground
        for lane_y in (Wd / 2 + rng.uniform(0.4, 1.2), -(Wd / 2 + rng.uniform(0.4, 1.2))):
            if rng.random() < 0.6:
                start = rng.uniform(-6, 0)
                for x0 in np.arange(start - 3 * L, 3 * L, 6.0):
                    quads.append(np.array([[x0, lane_y - 0.075], [x0 + 3.0, lane_y - 0.075],
                                           [x0 + 3.0, lane_y + 0.075], [x0, lane_y + 0.075]]))
    ground = np.stack(quads)                                            # (M, 4, 2) metres on z = 0
    g3 = np.concatenate([ground.reshape(-1, 2), np.zeros((ground.shape[0] * 4, 1))], axis=1)
    guv, gz = project(g3, centre, rot)
    gpx = np.round(np.clip(to_render_px(guv), -1e5, 1e5) * _ONE).astype(np.int32).reshape(-1, 4, 2)
    in_front = (gz.reshape(-1, 4) > 0.3).all(axis=1)                   # skip quads reaching behind the camera
    for q in np.flatnonzero(in_front[2:]) + 2:
        cv2.fillConvexPoly(bg, gpx[q], (215.0, 218.0, 220.0) if q % 3 else (40.0, 190.0, 215.0), cv2.LINE_AA, SHIFT)
    if in_front[0]:
        shadow = np.zeros((Hr, Wr), dtype=np.float32)
        cv2.fillConvexPoly(shadow, gpx[0], 1.0, cv2.LINE_AA, SHIFT)
        if in_front[1]:
            cv2.fillConvexPoly(shadow, gpx[1], 0.6, cv2.LINE_AA, SHIFT)
        k = max(3, int(0.04 * max(Hr, Wr)) | 1)
        shadow = cv2.blur(shadow, (k, k))
        bg *= (1.0 - 0.5 * shadow)[..., None]
    img = np.ascontiguousarray(np.clip(bg, 0, 255), dtype=np.uint8)
    if view.bg == "road":
        _clutter(img, camera, rng)
    return img


def _draw_vehicle(img: np.ndarray, ids: np.ndarray, prep, px: np.ndarray, depth: np.ndarray, centre,
                  view: View) -> None:
    """Paint the vehicle's visible polygons into ``img`` and their surface index + 1 into ``ids``, far to near;
    ``px`` are the vertices in fixed-point render pixels, ``depth`` their camera depths."""
    body = prep.body
    facing = ((centre - body.ref) * body.normals).sum(axis=1) > 0
    draw = facing[prep.surface_or_self] | body.always
    colours = _shade(prep, centre, view).tolist()
    mean_depth = np.add.reduceat(depth, body.starts) / body.counts
    # wheels first (they sit inside the body: only the arches and the gap under the sills show them), one
    # wheel at a time far to near; then surfaces far to near, each followed by its insets (windows, lamps)
    wheels = prep.wheels[draw[prep.wheels]]
    order = wheels[np.lexsort((wheels, -mean_depth[body.group[wheels]]))].tolist()
    surfaces = prep.surfaces[draw[prep.surfaces]]
    spans, concave, hull = prep.spans, prep.concave, prep.hull
    for p in order:
        pts = px[spans[p][0]:spans[p][1]]
        if hull[p]:
            pts = cv2.convexHull(pts)
        cv2.fillConvexPoly(img, pts, colours[p], cv2.LINE_AA, SHIFT)
        cv2.fillConvexPoly(ids, pts, p + 1, cv2.LINE_8, SHIFT)
    for s in surfaces[np.argsort(-mean_depth[surfaces], kind="stable")].tolist():
        pts = px[spans[s][0]:spans[s][1]]
        if concave[s]:
            cv2.fillPoly(img, [pts], colours[s], cv2.LINE_AA, SHIFT)
            cv2.fillPoly(ids, [pts], s + 1, cv2.LINE_8, SHIFT)
        else:
            cv2.fillConvexPoly(img, pts, colours[s], cv2.LINE_AA, SHIFT)
            cv2.fillConvexPoly(ids, pts, s + 1, cv2.LINE_8, SHIFT)
        for c in prep.children[s]:          # insets only change colour; the id buffer keeps the surface
            cv2.fillConvexPoly(img, px[spans[c][0]:spans[c][1]], colours[c], cv2.LINE_AA, SHIFT)


def _visible_keypoints(kpx: np.ndarray, ids: np.ndarray, prep, size: tuple[int, int], to_r: np.ndarray
                       ) -> np.ndarray:
    """(36, 3) float32 keypoints: output pixels ``kpx`` (36, 2) and visibility = inside the (W, H) image and a
    surface of that keypoint drawn at or next to it in the render-size id buffer ``ids``."""
    W, H = size
    Hr, Wr = ids.shape
    inside = (kpx[:, 0] >= 0) & (kpx[:, 0] <= W - 1) & (kpx[:, 1] >= 0) & (kpx[:, 1] <= H - 1)
    r = np.round((kpx + 0.5) * to_r - 0.5).astype(np.int64)
    ny = np.clip(r[:, 1:2] + _NEIGH[None, :, 0], 0, Hr - 1)
    nx = np.clip(r[:, 0:1] + _NEIGH[None, :, 1], 0, Wr - 1)
    seen = prep.member[ids[ny, nx], np.arange(NUM_KEYPOINTS)[:, None]].any(axis=1)
    kps = np.empty((NUM_KEYPOINTS, 3), dtype=np.float32)
    kps[:, :2] = kpx
    kps[:, 2] = inside & seen
    return kps


def _occluder(img: np.ndarray, ids: np.ndarray, rng: np.random.Generator) -> None:
    """Paint one occluder (pole, barrier/vehicle from an edge, or blob) into the image and the id buffer."""
    h, w = ids.shape
    col = tuple(float(c) for c in rng.uniform(15, 240, 3))
    kind = rng.random()
    if kind < 0.35:                                   # pole / tree trunk
        cx = rng.uniform(0.15, 0.85) * w
        half = rng.uniform(0.03, 0.07) * w
        tilt = rng.uniform(-0.1, 0.1) * h
        pts = np.array([[cx - half - tilt, -1], [cx + half - tilt, -1], [cx + half + tilt, h], [cx - half + tilt, h]])
    elif kind < 0.75:                                 # barrier / another vehicle entering from an edge
        depth = rng.uniform(0.12, 0.35)
        side = int(rng.integers(3))
        a, b = sorted(rng.uniform(-0.2, 1.2, 2))
        b = max(b, a + 0.3)
        if side == 0:      # bottom
            pts = np.array([[a * w, h * (1 - depth)], [b * w, h * (1 - depth * rng.uniform(0.6, 1.0))],
                            [b * w, h], [a * w, h]])
        elif side == 1:    # left
            pts = np.array([[-1, a * h], [w * depth, a * h], [w * depth * rng.uniform(0.6, 1.0), b * h], [-1, b * h]])
        else:              # right
            pts = np.array([[w * (1 - depth), a * h], [w, a * h], [w, b * h],
                            [w * (1 - depth * rng.uniform(0.6, 1.0)), b * h]])
    else:                                             # blob (bush, pedestrian, sign)
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.3, 1.0) * h
        rx, ry = rng.uniform(0.08, 0.2) * w, rng.uniform(0.1, 0.3) * h
        ang = np.linspace(0, 2 * np.pi, 12, endpoint=False)
        jit = 1.0 + 0.15 * rng.standard_normal(12)
        pts = np.stack([cx + rx * jit * np.cos(ang), cy + ry * jit * np.sin(ang)], axis=1)
    pts = cv2.convexHull(np.round(pts * _ONE).astype(np.int32))
    cv2.fillConvexPoly(img, pts, col, cv2.LINE_AA, SHIFT)
    cv2.fillConvexPoly(ids, pts, OCCLUDER_ID, cv2.LINE_8, SHIFT)


def _camera_effects(img: np.ndarray, view: View, rng: np.random.Generator) -> np.ndarray:
    """Colour cast, gamma, contrast and brightness (one LUT), blur, sensor noise."""
    if view.gain != (1.0, 1.0, 1.0) or view.gamma != 1.0 or view.contrast != 1.0 or view.brightness != 0.0:
        x = (np.arange(256, dtype=np.float64) / 255.0) ** view.gamma
        v = (x[:, None] * np.asarray(view.gain) * 255.0 - 128.0) * view.contrast + 128.0 + view.brightness
        img = cv2.LUT(img, np.clip(np.round(v), 0, 255).astype(np.uint8)[None])
    if view.blur > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), view.blur)
    if view.noise > 0.5:
        h, w = img.shape[:2]
        noise = (_tile_crop("fine", h, w, rng) * view.noise).astype(np.int16)
        img = cv2.add(img, cv2.merge([noise, noise, noise]), dtype=cv2.CV_8U)
    return img


def render_sample(rng_or_seed, *, size: int = 128, style: str = "synthetic", identity: Identity | None = None,
                  camera: CameraProfile | None = None, clean: bool = False, with_buffers: bool = False,
                  **overrides) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render one random vehicle crop -> (BGR uint8 (H, W, 3), keypoints (36, 3) float32 x, y px + visibility, meta).

    ``rng_or_seed``: an int / SeedSequence or a numpy Generator. The identity (type, shape, colour) is drawn
    first unless given, then the view; ``overrides`` replace View fields (e.g. yaw=90.0, elevation=5.0,
    distance=30.0, margins=(...), occluders=0) without changing any other draw. ``clean`` gives a symmetric
    setup (see sample_view). The longer image side is ``size`` pixels.
    """
    rng = rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)
    if identity is None:
        identity = make_identity(rng)
    camera = camera or DEFAULT_CAMERA
    view = sample_view(rng, camera, style, clean=clean, vehicle_length=identity.params()["L"])
    if overrides:
        if "yaw" in overrides:
            overrides["yaw"] = _wrap360(overrides["yaw"])
        view = replace(view, **overrides)
    return render_view(identity, view, size=size, camera=camera, with_buffers=with_buffers)
