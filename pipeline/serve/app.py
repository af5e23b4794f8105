"""The HTTP API and the page of ``pamtri serve``: search, embed and add over one index and one pipeline.

Requests decode their uploads with ``data.images.decode_image`` (pixel limit and header checks before decoding),
embed them through the :class:`~.batching.DynamicBatcher` (concurrent requests share a model call) and search
the index in one thread that owns it (:class:`IndexView`): the view holds the last committed generation whole
(``index.open_index``) and re-opens when a writer commits, so a search never sees half an add. Adds go through
``index.add_features`` (the lock, the checks and the atomic commit of ``pamtri index add``) while searches go on.
Image files are served only from the paths the index holds, by image id; no endpoint opens a path a client names.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import cv2
import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from pamtri.common.atomic import atomic_write_bytes
from pamtri.common.checkpoint import file_sha256
from pamtri.common.errors import ConfigError, DataError, PamtriError, WriteError
from pamtri.data.images import MAX_SIDE, decode_image, read_image
from pamtri.pipeline.index import (
    FeatureSet,
    _column,
    add_features,
    committed_generation,
    open_index,
    rerank_index,
    search_covisible,
)
from pamtri.pipeline.infer import Pipeline
from pamtri.pipeline.report import TEMPLATES, render

from .batching import DynamicBatcher

log = logging.getLogger(__name__)

MAX_FILES = 64          # uploads one request may carry
MAX_TOP = 100           # results a query may ask for
THUMB_SIDES = (16, 1024)  # the thumbnail sizes /v1/images/{id}?size= accepts (longer side, pixels)
WRITE_PATHS = ("/v1/index/add",)  # the endpoints that need the bearer token when one is configured
EPOCH_FROM = 1e9  # times above this (2001 on) are taken for Unix seconds: the page shows them as UTC dates
STATIC = {"serve.js": "text/javascript; charset=utf-8", "serve.css": "text/css; charset=utf-8"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
               "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'")

Uploads = Annotated[list[UploadFile], File(description="images, JPEG or PNG")]


class _PerFile:
    def __getitem__(self, kind):
        return Annotated[list[kind] | None, Form(description="one value per file, or one for all")]


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(
    auto_error=False, description="the token of --token-file, when the server has one"))]
PerFile = _PerFile()  # PerFile[int]: an optional form list with one value per uploaded file (or one for all)


@dataclass
class ServeConfig:
    """What ``pamtri serve`` serves: the index, both weights (default: those the index records), the bearer
    token for writes (None: writes are open), the upload cap, the batching window and the pipeline options;
    ``images_dir``: where added images are kept (default ``IDX.images/`` beside the index)."""
    index: str
    reid_weights: str | None = None
    pose_weights: str | None = None
    token: str | None = None
    max_upload_mb: float = 8.0
    max_wait_ms: float = 5.0
    images_dir: str | None = None
    pipeline_options: dict = field(default_factory=dict)
    allowed_hosts: tuple[str, ...] | None = None  # Host header values accepted (None: any); loopback binds set it

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * (1 << 20))


class Snapshot:
    """One committed generation of the index, open, with its per-image metadata in memory (position order)."""

    def __init__(self, idx):
        self.idx, self.n, self.generation = idx, len(idx), idx.info["generation"]
        self.names = _column(idx, "name")[:self.n]  # rows are appended only: the first n are this generation's
        self.paths = _column(idx, "path")[:self.n]
        self.cameras = np.array([-1 if c is None else c for c in _column(idx, "camera")[:self.n]], np.int64)
        self.tracks = [t for t in _column(idx, "track")[:self.n]]
        self.times = np.array([math.nan if t is None else t for t in _column(idx, "timestamp")[:self.n]], float)
        self.ids = {name: i for i, name in enumerate(self.names)}

    def row(self, pos: int) -> dict:
        """The metadata of the image at position ``pos`` as JSON values."""
        t = self.times[pos]
        return {"image_id": int(pos), "image": self.names[pos],
                "camera": None if self.cameras[pos] < 0 else int(self.cameras[pos]),
                "time": None if math.isnan(t) else float(t), "track": self.tracks[pos]}


class IndexView:
    """The index as searches see it: one thread owns the open index (SQLite connections stay in the thread that
    made them) and re-opens it when a writer has committed a newer generation."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="pamtri-index")
        try:
            self._snap = self.executor.submit(lambda: Snapshot(open_index(self.path))).result()
        except BaseException:
            self.executor.shutdown()
            raise

    def current(self) -> Snapshot:
        """The newest committed generation (call in the index thread: through :meth:`run`)."""
        if committed_generation(self._snap.idx) != self._snap.generation:
            old, self._snap = self._snap, Snapshot(open_index(self.path))
            old.idx.close()
        return self._snap

    async def run(self, fn):
        """``fn(snapshot)`` in the index thread, on the newest committed generation."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, lambda: fn(self.current()))

    def call(self, fn):
        """:meth:`run` from a plain thread."""
        return self.executor.submit(lambda: fn(self.current())).result()

    def close(self) -> None:
        self.executor.submit(lambda: self._snap.idx.close()).result()
        self.executor.shutdown()


def read_token(path: str | os.PathLike) -> str:
    """The bearer token in the file ``path`` (surrounding white space dropped); ConfigError when it is empty."""
    token = Path(path).read_text(encoding="utf-8").strip()
    if not token:
        raise ConfigError(f"--token-file {path}: the file is empty; write the token into it")
    return token


def image_kind(data: bytes) -> str | None:
    """'jpg' or 'png' from the first bytes of an upload; None for anything else."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return None


def upload_name(filename: str | None, i: int) -> str:
    """The image name an upload is known by: the base name of the client's file name (a label only, never
    opened), printable and at most 200 characters; ``upload-i`` when it has none."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    if not name or not name.isprintable() or len(name) > 200 or name in (".", ".."):
        return f"upload-{i}"
    return name


def token_ok(authorization: str, token: str | None) -> bool:
    """Whether an Authorization header value carries the bearer ``token`` (always, when there is none)."""
    if token is None:
        return True
    return authorization.startswith("Bearer ") and hmac.compare_digest(authorization[7:].encode(), token.encode())


def host_of(value: str) -> str:
    """The host name of a Host header value or an Origin URL, without port or scheme, lower case."""
    value = value.split("://", 1)[-1].split("/", 1)[0].lower()
    return value[:value.index("]") + 1] if value.startswith("[") else value.rsplit(":", 1)[0]


class BodyLimit:
    """ASGI middleware, before any body is read: refuses a Host header outside ``allowed_hosts`` (421: DNS
    rebinding of a loopback server), a POST whose Origin is another site than the server (403: a web page's
    cross-site form post), a write without the configured bearer token (401), and a request body over
    ``limit`` bytes (413, by Content-Length, or while reading a body sent without one)."""

    def __init__(self, app, limit: int, token: str | None, allowed_hosts: tuple[str, ...] | None = None):
        self.app, self.limit, self.token, self.allowed_hosts = app, limit, token, allowed_hosts
        self.message = f"request body larger than the upload limit of {limit / (1 << 20):.3g} MiB"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        refusal = None
        host = headers.get("host", "")
        origin = headers.get("origin")
        if self.allowed_hosts is not None and host_of(host) not in self.allowed_hosts:
            refusal = JSONResponse({"detail": f"host {host!r} is not served here; use "
                                              f"{' or '.join(self.allowed_hosts)}"}, 421)
        elif scope["method"] == "POST" and origin is not None and origin.split("://", 1)[-1].lower() != host.lower():
            refusal = JSONResponse({"detail": f"cross-origin request from {origin} refused"}, 403)
        elif scope["path"] in WRITE_PATHS and not token_ok(headers.get("authorization", ""), self.token):
            refusal = JSONResponse({"detail": "missing or wrong bearer token (Authorization: Bearer TOKEN)"},
                                   401, headers={"WWW-Authenticate": "Bearer"})
        if refusal is not None:
            return await refusal(scope, receive, send)
        from starlette.exceptions import HTTPException
        too_large = JSONResponse({"detail": self.message}, 413)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return await too_large(scope, receive, send)
        seen, started = 0, False

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # an HTTPException: FastAPI passes it on from its body parsing as it is
                raise HTTPException(413, self.message)
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)
        try:
            await self.app(scope, counted, watched)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await too_large(scope, receive, send)


def create_app(config: ServeConfig, pipe=None):
    """The FastAPI app of ``config``; ``pipe``: a loaded ``infer.Pipeline`` (default: loaded from the weights).
    ConfigError when the ReID weights are not those the index was built with."""


    view = IndexView(config.index)
    info = view.call(lambda s: s.idx.info)
    reid_weights = config.reid_weights or info["reid_weights"]
    pose_weights = config.pose_weights or info.get("pose_weights") or None
    try:
        model_sha256 = file_sha256(reid_weights)
        if model_sha256 != info["model_sha256"]:
            raise ConfigError(f"{reid_weights}: not the ReID weights of {config.index} (checkpoint sha256 "
                              f"{model_sha256[:12]}, the index holds {info['model_sha256'][:12]}); serve it with "
                              "the weights it was built with")
        if pipe is None:
            pipe = Pipeline.from_weights(pose_weights, reid_weights, **config.pipeline_options)
    except BaseException:
        view.close()
        raise

    def run_model(images: list[np.ndarray]) -> dict[str, np.ndarray]:
        """One batch through both stages (a request larger than the batch size in the pipeline's batches)."""
        return pipe.embed_arrays(images) if len(images) <= pipe.batch_size else pipe.embed(images)
    batcher = DynamicBatcher(run_model, max_batch=pipe.batch_size, max_wait=config.max_wait_ms / 1000)
    images_dir = Path(config.images_dir or f"{config.index}.images").resolve()


    @asynccontextmanager
    async def lifespan(app):
        yield
        batcher.close()
        view.close()

    app = FastAPI(title="pamtri search service", lifespan=lifespan,
                  description="Find a vehicle across cameras: search, embed and add to a pamtri index. "
                              "POST /v1/index/add needs `Authorization: Bearer TOKEN` when the server has a "
                              "token (--token-file). Errors are JSON `{\"detail\": \"one line\"}`.")
    app.state.batcher, app.state.view, app.state.pipe = batcher, view, pipe
    app.add_middleware(BodyLimit, limit=config.max_upload_bytes, token=config.token,
                       allowed_hosts=config.allowed_hosts)

    @app.middleware("http")
    async def no_sniffing(request: Request, call_next):
        response = await call_next(request)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(RequestValidationError)
    async def one_line_validation(request: Request, exc: RequestValidationError):
        first = exc.errors()[0]
        where = " ".join(str(p) for p in first.get("loc", ()))
        return JSONResponse({"detail": f"{where}: {first.get('msg', 'invalid')}"}, 422)

    async def decoded(files: list[UploadFile]) -> tuple[list[np.ndarray], list[bytes], list[str]]:
        """The uploads as RGB arrays, their bytes and names; 400 naming the upload when one is not an image."""
        if len(files) > MAX_FILES:
            raise HTTPException(400, f"{len(files)} files in one request; at most {MAX_FILES}")
        arrays, blobs, names = [], [], []
        for i, f in enumerate(files):
            name = upload_name(f.filename, i)
            data = await f.read()
            if not data:
                raise HTTPException(400, f"{name}: empty upload (0 bytes)")
            if image_kind(data) is None:
                raise HTTPException(400, f"{name}: not a JPEG or PNG image")
            try:
                arrays.append(await run_in_threadpool(decode_image, data, name))
            except DataError as exc:
                raise HTTPException(400, str(exc)) from None
            blobs.append(data)
            names.append(name)
        return arrays, blobs, names

    async def embedded(arrays: list[np.ndarray]) -> dict[str, np.ndarray]:
        out = await asyncio.wrap_future(batcher.submit(arrays))
        if not np.isfinite(out["features"]).all():
            raise HTTPException(500, "the ReID network's feature of an upload is not finite; check the weights")
        return out

    def query_json(name: str, image: np.ndarray, out: dict, i: int) -> dict:
        return {"name": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                "keypoints": np.round(out["keypoints"][i].astype(float), 2).tolist(),
                "color": int(out["color"][i]), "type": int(out["type"][i])}

    @app.get("/healthz")
    async def healthz():
        """Model loaded and index size (the committed generation now)."""
        snap = await view.run(lambda s: s)
        return {"status": "ok", "model_loaded": True, "index_size": snap.n, "generation": snap.generation,
                "dim": snap.idx.info["dim"], "metric": snap.idx.info["metric"], "kind": snap.idx.info["kind"],
                "cameras": sorted({int(c) for c in snap.cameras if c >= 0})}

    @app.post("/v1/search")
    async def search(files: Uploads, top: Annotated[int, Query(ge=1, le=MAX_TOP)] = 10,
                     cameras: Annotated[list[int] | None, Query(description="only these cameras (repeat)")] = None,
                     time_from: Annotated[float | None, Query(description="only images at or after")] = None,
                     time_to: Annotated[float | None, Query(description="only images at or before")] = None,
                     exclude_same_camera: Annotated[bool, Query(description="leave out query_camera")] = False,
                     query_camera: Annotated[int | None, Query(description="the queries' camera")] = None,
                     rerank: Annotated[bool, Query(description="k-reciprocal re-ranking (index search)")] = False,
                     rerank_top: Annotated[int, Query(ge=1, le=1000)] = 100,
                     part_weight: Annotated[float | None, Query(ge=0, le=100, description="models with part "
                                                                "features: weight of the co-visible part distance "
                                                                "(0: global distance alone; default: the model's "
                                                                "own)")] = None):
        """For each upload, the ``top`` nearest indexed images: image id and name, distance, camera, time."""
        if exclude_same_camera and query_camera is None:
            raise HTTPException(400, "exclude_same_camera needs query_camera (the camera the queries come from)")
        if time_from is not None and time_to is not None and time_from > time_to:
            raise HTTPException(400, f"time_from {time_from} is after time_to {time_to}")
        arrays, _, names = await decoded(files)
        out = await embedded(arrays)

        def run(snap: Snapshot):
            keep = None
            if cameras is not None or time_from is not None or time_to is not None:
                keep = np.ones(snap.n, bool) if cameras is None else np.isin(snap.cameras, cameras)
                if time_from is not None:
                    keep &= snap.times >= time_from  # NaN (no time) compares False: left out
                if time_to is not None:
                    keep &= snap.times <= time_to
            qcams = None if query_camera is None else [query_camera] * len(arrays)
            if rerank:
                pos, dist = rerank_index(snap.idx, out["features"], top, rerank_top, qcams, exclude_same_camera,
                                         keep)
            else:
                parts = (out["part_features"], out["part_visibility"]) if "part_features" in out else None
                pos, dist = search_covisible(snap.idx, out["features"], parts, top, query_cameras=qcams,
                                             exclude_same_camera=exclude_same_camera, keep=keep,
                                             part_weight=part_weight)
            queries = []
            for i, name in enumerate(names):
                hits = [{"rank": r + 1, **snap.row(p), "distance": float(d)}
                        for r, (p, d) in enumerate(zip(pos[i], dist[i])) if p >= 0]
                queries.append({**query_json(name, arrays[i], out, i), "results": hits})
            return {"index_size": snap.n, "generation": snap.generation, "queries": queries}
        try:
            return await view.run(run)
        except DataError as exc:  # an empty index
            raise HTTPException(409, str(exc)) from None

    @app.post("/v1/embed")
    async def embed(files: Uploads, format: Annotated[str, Query(
                        pattern="^(json|npy)$", description="json, or npy: the features (N, D) float32")] = "json"):
        """Features, keypoints (image pixels + confidence), colour and type of each upload."""
        arrays, _, names = await decoded(files)
        out = await embedded(arrays)
        if format == "npy":
            buf = io.BytesIO()
            np.save(buf, out["features"].astype(np.float32))
            return Response(buf.getvalue(), media_type="application/x-npy",
                            headers={"Content-Disposition": 'attachment; filename="features.npy"'})
        return {"model_sha256": model_sha256, "dim": int(out["features"].shape[1]),
                "embeddings": [{**query_json(n, a, out, i), "features": out["features"][i].tolist()}
                               for i, (n, a) in enumerate(zip(names, arrays))]}

    def writer(credentials: Credentials) -> None:
        given = "" if credentials is None else f"{credentials.scheme} {credentials.credentials}"
        if not token_ok(given, config.token):  # the middleware refused it already; this keeps the route safe alone
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer TOKEN)")

    add_lock = threading.Lock()  # one add of this server at a time: its image files and its commit together

    @app.post("/v1/index/add", dependencies=[Depends(writer)])
    async def add(files: Uploads, camera: PerFile[int] = None, time: PerFile[float] = None,
                  track: PerFile[int] = None, name: PerFile[str] = None,
                  skip_existing: Annotated[bool, Form()] = False):
        """Embed the uploads and add them to the index atomically (as ``pamtri index add``), with camera, time
        and track; the images are kept in the server's images folder, named by their content's SHA-256."""
        arrays, blobs, names = await decoded(files)
        n = len(arrays)

        def per_file(values, what):
            if values is None:
                return [None] * n
            if len(values) not in (1, n):
                raise HTTPException(400, f"{len(values)} {what} values for {n} files; give one, or one per file")
            return list(values) * n if len(values) == 1 else list(values)
        cams, times, tracks = per_file(camera, "camera"), per_file(time, "time"), per_file(track, "track")
        if name is not None:
            names = [upload_name(x, i) for i, x in enumerate(per_file(name, "name"))]
        if any(t is not None and not math.isfinite(t) for t in times):
            raise HTTPException(400, "time values must be finite numbers")
        out = await embedded(arrays)
        paths = [images_dir / f"{hashlib.sha256(data).hexdigest()[:32]}.{image_kind(data)}" for data in blobs]
        fs = FeatureSet(np.ascontiguousarray(out["features"], np.float32), names, [str(p) for p in paths], cams,
                        tracks, times, model_sha256, str(reid_weights), str(pose_weights or ""),
                        out.get("part_features"), out.get("part_visibility"))

        def commit() -> tuple[int, int]:
            """Keep the image files, then add; on a refusal remove the files this add wrote."""
            with add_lock:
                images_dir.mkdir(parents=True, exist_ok=True)
                created = []
                try:
                    for path, data in zip(paths, blobs):
                        if not path.exists():
                            atomic_write_bytes(path, data)
                            created.append(path)
                    return add_features(config.index, fs, "upload", skip_existing)
                except BaseException:
                    for p in created:
                        p.unlink(missing_ok=True)
                    raise
        try:
            added, skipped = await run_in_threadpool(commit)
        except DataError as exc:
            raise HTTPException(409, str(exc)) from None
        except WriteError as exc:  # the disk: the server's to fix, and nothing was added
            raise HTTPException(500, str(exc)) from None
        except PamtriError as exc:  # another writer held the index too long
            raise HTTPException(503, str(exc)) from None
        snap = await view.run(lambda s: s)
        return {"added": added, "skipped": skipped, "index_size": snap.n, "generation": snap.generation,
                "images": [{"name": x, "image_id": snap.ids.get(x)} for x in names]}

    @app.get("/v1/images/{image_id}")
    async def image(image_id: int, size: Annotated[int | None, Query(
                        ge=THUMB_SIDES[0], le=THUMB_SIDES[1], description="thumbnail: longer side, pixels")] = None):
        """The indexed image ``image_id`` as JPEG (a thumbnail with ``size``); only images the index holds."""
        snap = await view.run(lambda s: s)
        if not 0 <= image_id < snap.n:
            raise HTTPException(404, f"no image {image_id} in the index (it holds ids 0 to {snap.n - 1})")

        def encode() -> bytes:
            try:
                rgb = read_image(snap.paths[image_id], max_side=size or MAX_SIDE)
            except DataError:
                raise HTTPException(404, f"image {image_id} ({snap.names[image_id]}): its file is missing or "
                                         "unreadable on the server") from None
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
            return buf.tobytes()
        return Response(await run_in_threadpool(encode), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=600"})

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        snap = await view.run(lambda s: s)
        timed = snap.times[~np.isnan(snap.times)]
        html = render("serve.html", index_name=Path(config.index).name, size=snap.n,
                      cameras=sorted({int(c) for c in snap.cameras if c >= 0}), max_files=MAX_FILES,
                      times=None if not len(timed) else "epoch" if timed.min() > EPOCH_FROM else "number")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_POLICY})

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str):
        if name not in STATIC:  # a fixed list: never a path from the request
            raise HTTPException(404, f"no static file {name!r}")
        return Response((TEMPLATES / name).read_bytes(), media_type=STATIC[name])

    return app
