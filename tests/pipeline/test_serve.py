"""pamtri serve: the API through FastAPI's test client (every bad input and security case), the dynamic batcher,
searches while adds commit, a real ``pamtri serve`` process on 127.0.0.1, and the page in headless Chromium."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from pamtri.pipeline.serve.app import MAX_FILES, ServeConfig, create_app  # noqa: E402
from pamtri.pipeline.serve.batching import DynamicBatcher  # noqa: E402
from tests.pipeline.serve_fixtures import CAMERAS, T0, copy_index, make_world, tiny_pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine
    yield make_world(tmp_path_factory.mktemp("serve"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def pipe(world):
    return tiny_pipeline(world)


@pytest.fixture()
def client(world, pipe):
    """A client of the service over the pristine index (searches only)."""
    with TestClient(create_app(ServeConfig(index=str(world.index)), pipe=pipe)) as c:
        yield c


def served(world, pipe, tmp_path, **config):
    """A client of the service over a copy of the world's index (for adds); ``config``: ServeConfig fields."""
    index = copy_index(world, tmp_path / "index")
    return TestClient(create_app(ServeConfig(index=str(index), **config), pipe=pipe))


def upload(*items) -> list:
    """Multipart ``files`` entries: a Path (its bytes) or (name, bytes)."""
    out = []
    for item in items:
        name, data = (item.name, item.read_bytes()) if isinstance(item, Path) else item
        out.append(("files", (name, data, "application/octet-stream")))
    return out


def encoded(ext: str, shape=(40, 60, 3), seed: int = 0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)
    return cv2.imencode(ext, rgb)[1].tobytes()


# ---------------------------------------------------------------- search, embed, images, health


def test_search_returns_each_query_image_first_with_camera_time_and_id(client, world):
    r = client.post("/v1/search", files=upload(world.images[5], world.images[2]), params={"top": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["index_size"] == len(world.images) and len(body["queries"]) == 2
    for q, i in zip(body["queries"], (5, 2)):
        first = q["results"][0]
        assert first == {"rank": 1, "image_id": i, "image": f"car{i:02d}.jpg", "camera": world.cameras[i],
                         "time": world.times[i], "track": None, "distance": pytest.approx(0.0, abs=1e-4)}
        assert [h["rank"] for h in q["results"]] == [1, 2, 3, 4]
        assert all(a["distance"] <= b["distance"] for a, b in zip(q["results"], q["results"][1:]))
        h, w = cv2.imread(str(world.images[i])).shape[:2]
        assert len(q["keypoints"]) == 36 and (q["width"], q["height"]) == (w, h)
        assert q["name"] == world.images[i].name


def test_search_equals_index_search_of_the_same_features(client, world, pipe):
    from pamtri.data.images import read_image
    from pamtri.pipeline.index import open_index, rerank_index, search_index
    feats = pipe.embed_arrays([read_image(world.images[7])])["features"]
    idx = open_index(world.index)
    for rerank in (False, True):
        fn = rerank_index if rerank else search_index
        pos, dist = fn(idx, feats, 6)
        got = client.post("/v1/search", files=upload(world.images[7]),
                          params={"top": 6, "rerank": rerank}).json()["queries"][0]["results"]
        assert [h["image_id"] for h in got] == pos[0].tolist()
        assert np.allclose([h["distance"] for h in got], dist[0], atol=1e-4)
    idx.close()


def test_search_filters_cameras_time_range_and_the_query_camera(client, world):
    def ids(**params):
        r = client.post("/v1/search", files=upload(world.images[4]), params={"top": 20, **params})
        assert r.status_code == 200, r.text
        return [h["image_id"] for h in r.json()["queries"][0]["results"]]
    n = len(world.images)
    assert sorted(ids()) == list(range(n))
    assert sorted(ids(cameras=[0, 2])) == [i for i in range(n) if world.cameras[i] in (0, 2)]
    assert sorted(ids(time_from=T0 + 120, time_to=T0 + 300)) == [2, 3, 4, 5]
    same = world.cameras[4]
    assert sorted(ids(exclude_same_camera=True, query_camera=same)) == [
        i for i in range(n) if world.cameras[i] != same]
    assert sorted(ids(cameras=[same], time_to=T0 + 400, exclude_same_camera=False)) == [
        i for i in range(7) if world.cameras[i] == same]
    assert ids(cameras=[CAMERAS + 5]) == []
    r = client.post("/v1/search", files=upload(world.images[4]), params={"exclude_same_camera": True})
    assert r.status_code == 400 and "query_camera" in r.json()["detail"]
    r = client.post("/v1/search", files=upload(world.images[4]), params={"time_from": 5, "time_to": 1})
    assert r.status_code == 400 and "after time_to" in r.json()["detail"]


def test_embed_json_and_npy_are_the_pipelines_outputs(client, world, pipe):
    from pamtri.data.images import read_image
    want = pipe.embed_arrays([read_image(p) for p in world.images[:2]])
    body = client.post("/v1/embed", files=upload(*world.images[:2])).json()
    assert body["dim"] == want["features"].shape[1] and len(body["model_sha256"]) == 64
    for i, e in enumerate(body["embeddings"]):
        assert np.allclose(e["features"], want["features"][i], atol=1e-4)
        assert np.allclose(e["keypoints"], want["keypoints"][i], atol=0.01)
        assert (e["color"], e["type"]) == (int(want["color"][i]), int(want["type"][i]))
    r = client.post("/v1/embed", files=upload(*world.images[:2]), params={"format": "npy"})
    assert r.headers["content-type"] == "application/x-npy"
    assert np.allclose(np.load(io.BytesIO(r.content)), want["features"], atol=1e-4)
    assert client.post("/v1/embed", files=upload(world.images[0]), params={"format": "pickle"}).status_code == 422


def test_images_are_served_by_id_only_with_thumbnails(client, world):
    r = client.get("/v1/images/3")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    shape = cv2.imread(str(world.images[3])).shape
    assert cv2.imdecode(np.frombuffer(r.content, np.uint8), cv2.IMREAD_COLOR).shape == shape
    thumb = cv2.imdecode(np.frombuffer(client.get("/v1/images/3", params={"size": 32}).content, np.uint8), 1)
    assert max(thumb.shape[:2]) == 32
    assert client.get("/v1/images/3", params={"size": 100000}).status_code == 422
    r = client.get(f"/v1/images/{len(world.images)}")
    assert r.status_code == 404 and r.json()["detail"] == f"no image {len(world.images)} in the index (it holds " \
                                                          f"ids 0 to {len(world.images) - 1})"
    assert client.get("/v1/images/-1").status_code == 404
    for hostile in ("..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", str(world.images[0]), "car00.jpg", "1;ls"):
        assert client.get(f"/v1/images/{hostile}").status_code in (404, 422), hostile
    for name in ("../serve.html", "serve.html", "..%2Fapp.py"):
        assert client.get(f"/static/{name}").status_code == 404, name


def test_health_openapi_and_page(client, world):
    h = client.get("/healthz").json()
    assert h["status"] == "ok" and h["model_loaded"] and h["index_size"] == len(world.images)
    assert h["cameras"] == list(range(CAMERAS))
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/search", "/v1/embed", "/v1/index/add", "/v1/images/{image_id}", "/healthz"} <= set(paths)
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert '<script src="/static/serve.js"' in page.text and "http" not in page.text.split("<body", 1)[0]
    assert 'class="camera" value="2"' in page.text
    js = client.get("/static/serve.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"] and "innerHTML" not in js.text
    assert "//cdn" not in js.text and "https://" not in js.text


def test_the_page_escapes_what_it_shows():
    from pamtri.pipeline.report import render
    html = render("serve.html", index_name="<img src=x onerror=alert(1)>.faiss", size=1, cameras=[], max_files=4,
                  times="epoch")
    assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt;.faiss" in html


# ---------------------------------------------------------------- bad input and security


def test_bad_uploads_are_4xx_with_one_clear_message(client, world, tmp_path):
    from tests.data.test_images import write_png_bomb
    write_png_bomb(tmp_path / "bomb.png")
    jpg, png = encoded(".jpg"), encoded(".png")
    cases = [
        (("empty.jpg", b""), 400, "empty.jpg: empty upload (0 bytes)"),
        (("notes.jpg", b"just some text, not an image"), 400, "notes.jpg: not a JPEG or PNG image"),
        (("anim.gif", b"GIF89a" + bytes(64)), 400, "anim.gif: not a JPEG or PNG image"),
        (("cut.jpg", jpg[:len(jpg) // 2]), 400, "cut.jpg: truncated JPEG (no end-of-image marker); re-copy or "
                                                "re-encode the file"),
        (("cut.png", png[:len(png) // 2]), 400, "cut.png: cannot decode image (corrupt file or not an image "
                                                "format OpenCV reads)"),
        (("tiny.png", encoded(".png", (2, 2, 3))), 400, "tiny.png: image is 2x2 pixels, smaller than the minimum "
                                                        "4x4"),
        (("bomb.png", (tmp_path / "bomb.png").read_bytes()), 400,
         "bomb.png: image is 20000x20000 pixels, more than the 100,000,000 a decode may produce (a decompression "
         "bomb?); shrink it first"),
        (("../../etc/passwd", b"x"), 400, "passwd: not a JPEG or PNG image"),
    ]
    for (name, data), status, message in cases:
        for endpoint in ("/v1/search", "/v1/embed"):
            r = client.post(endpoint, files=upload(world.images[0], (name, data)))
            assert (r.status_code, r.json()) == (status, {"detail": message}), (endpoint, name)
    r = client.post("/v1/search")
    assert (r.status_code, r.json()) == (422, {"detail": "body files: Field required"})
    r = client.post("/v1/search", files=upload(world.images[0]), params={"top": 0})
    assert r.status_code == 422 and r.json()["detail"].startswith("query top: ")
    r = client.post("/v1/search", files=upload(*[world.images[0]] * (MAX_FILES + 1)))
    assert r.status_code == 400 and r.json()["detail"] == f"{MAX_FILES + 1} files in one request; at most {MAX_FILES}"


def test_uploads_over_the_cap_are_refused_with_413(world, pipe, tmp_path):
    with served(world, pipe, tmp_path, max_upload_mb=0.05) as c:
        big = ("big.png", encoded(".png", (200, 200, 3)))  # ~120 kB of noise
        r = c.post("/v1/search", files=upload(big))
        assert (r.status_code, r.json()) == (413, {"detail": "request body larger than the upload limit of "
                                                             "0.05 MiB"})

        def chunks():  # no Content-Length: the body is counted as it arrives
            body = b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.png\"\r\n\r\n"
            yield body
            for _ in range(20):
                yield bytes(8192)
        r = c.post("/v1/embed", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"})
        assert r.status_code == 413
        assert c.post("/v1/search", files=upload(world.images[0])).status_code == 200


def test_foreign_hosts_and_cross_origin_posts_are_refused_before_the_body(world, pipe, tmp_path):
    with served(world, pipe, tmp_path, allowed_hosts=("testserver", "127.0.0.1")) as c:
        r = c.get("/healthz", headers={"Host": "rebound.example:8000"})
        assert r.status_code == 421 and r.json()["detail"] == ("host 'rebound.example:8000' is not served here; use "
                                                               "testserver or 127.0.0.1")
        assert c.get("/healthz", headers={"Host": "127.0.0.1:8000"}).status_code == 200
        for endpoint in ("/v1/search", "/v1/embed", "/v1/index/add"):
            r = c.post(endpoint, files=upload(world.images[0]), headers={"Origin": "http://evil.example"})
            assert (r.status_code, r.json()) == (403, {"detail": "cross-origin request from http://evil.example "
                                                                 "refused"}), endpoint
        r = c.post("/v1/search", files=upload(world.images[0]), headers={"Origin": "null"})
        assert r.status_code == 403
        r = c.post("/v1/search", files=upload(world.images[0]), headers={"Origin": "http://testserver"})
        assert r.status_code == 200  # the page's own requests
        assert c.get("/healthz").json()["index_size"] == len(world.images)


def test_writes_need_the_token_when_one_is_set(world, pipe, tmp_path):
    with served(world, pipe, tmp_path, token="s3cret") as c:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"},
                        {"Authorization": "Basic czNjcmV0"}):
            r = c.post("/v1/index/add", files=upload(world.images[0]), headers=headers)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", headers
            assert r.json()["detail"] == "missing or wrong bearer token (Authorization: Bearer TOKEN)"
        assert c.get("/healthz").json()["index_size"] == len(world.images)  # nothing was added
        assert c.post("/v1/search", files=upload(world.images[0])).status_code == 200  # reads stay open
        new = ("new.png", encoded(".png", seed=3))
        r = c.post("/v1/index/add", files=upload(new), headers={"Authorization": "Bearer s3cret"})
        assert r.status_code == 200 and r.json()["added"] == 1
        assert "HTTPBearer" in c.get("/openapi.json").json()["components"]["securitySchemes"]


def test_the_add_route_checks_the_token_itself(world, pipe, tmp_path, monkeypatch):
    from pamtri.pipeline.serve import app as serve_app
    real, calls = serve_app.token_ok, []

    def lenient_middleware(given, token):  # the first check (the middleware's) passes; the route's is the real one
        calls.append(given)
        return len(calls) == 1 or real(given, token)
    monkeypatch.setattr(serve_app, "token_ok", lenient_middleware)
    with served(world, pipe, tmp_path, token="s3cret") as c:
        r = c.post("/v1/index/add", files=upload(("x.png", encoded(".png", seed=5))),
                   headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and calls == ["Bearer wrong", "Bearer wrong"]


def test_add_then_search_finds_the_new_image_with_its_metadata(world, pipe, tmp_path):
    new = [("van-a.png", encoded(".png", seed=11)), ("van-b.jpg", encoded(".jpg", seed=12))]
    with served(world, pipe, tmp_path) as c:
        r = c.post("/v1/index/add", files=upload(*new), data={"camera": ["7", "8"], "time": str(T0 + 1e4),
                                                              "track": "42"})
        assert r.status_code == 200, r.text
        n = len(world.images)
        assert r.json() == {"added": 2, "skipped": 0, "index_size": n + 2, "generation": 2,
                            "images": [{"name": "van-a.png", "image_id": n}, {"name": "van-b.jpg", "image_id": n + 1}]}
        hit = c.post("/v1/search", files=upload(new[1]), params={"top": 1}).json()["queries"][0]["results"][0]
        assert hit == {"rank": 1, "image_id": n + 1, "image": "van-b.jpg", "camera": 8, "time": T0 + 1e4, "track": 42,
                       "distance": pytest.approx(0.0, abs=1e-4)}
        stored = c.get(f"/v1/images/{n}")
        assert stored.status_code == 200
        kept = sorted((tmp_path / "index" / "city.faiss.images").iterdir())
        assert sorted(p.suffix for p in kept) == [".jpg", ".png"] and all(len(p.stem) == 32 for p in kept)
        # a name already indexed: refused whole (409), nothing kept; skip_existing skips it
        r = c.post("/v1/index/add", files=upload(("car00.jpg", encoded(".jpg", seed=13)), new[0]))
        assert r.status_code == 409 and "already in the index" in r.json()["detail"]
        assert len(list((tmp_path / "index" / "city.faiss.images").iterdir())) == 2
        r = c.post("/v1/index/add", files=upload(new[0], ("van-c.png", encoded(".png", seed=14))),
                   data={"skip_existing": "true"})
        assert (r.json()["added"], r.json()["skipped"]) == (1, 1)
        r = c.post("/v1/index/add", files=upload(*new), data={"camera": ["1", "2", "3"]})
        assert r.status_code == 400 and r.json()["detail"] == "3 camera values for 2 files; give one, or one per file"
        r = c.post("/v1/index/add", files=upload(*new), data={"time": "nan"})
        assert r.status_code == 400
        # a client's file name is a label: the image is kept under its hash in the images folder, nowhere else
        before = set((tmp_path / "index" / "city.faiss.images").iterdir())
        r = c.post("/v1/index/add", files=upload(("../../escape.png", encoded(".png", seed=15))))
        assert r.json()["images"] == [{"name": "escape.png", "image_id": n + 3}]
        assert not list(tmp_path.rglob("escape.png")) and not (tmp_path.parent / "escape.png").exists()
        (kept,) = set((tmp_path / "index" / "city.faiss.images").iterdir()) - before
        assert kept.name.endswith(".png") and len(kept.stem) == 32
        r = c.post("/v1/index/add", files=upload(("a.png", encoded(".png", seed=16))), data={"name": "/etc/bad\tname"})
        assert r.json()["images"][0]["name"] == "upload-0"  # not printable: a plain label instead
        assert c.get("/healthz").json()["index_size"] == n + 5


def test_a_server_with_other_weights_than_the_index_is_refused(world, tmp_path):
    from pamtri.common.errors import ConfigError
    from tests.conftest import write_tiny_reid_checkpoint
    write_tiny_reid_checkpoint(tmp_path / "other.pt", heatmaps=False, segments=False, keypoints=False)
    with pytest.raises(ConfigError, match="not the ReID weights of"):
        create_app(ServeConfig(index=str(world.index), reid_weights=str(tmp_path / "other.pt")), pipe=object())


def test_binding_all_interfaces_without_a_token_warns(tmp_path, capsys):
    from pamtri.pipeline.cli import main
    assert main(["serve", "--index", str(tmp_path / "none.faiss"), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "warning: binding 0.0.0.0 without --token-file" in err and "not a pamtri index" in err
    (tmp_path / "token").write_text("\n")
    assert main(["serve", "--index", str(tmp_path / "none.faiss"), "--token-file", str(tmp_path / "token")]) == 1
    assert "the file is empty" in capsys.readouterr().err


# ---------------------------------------------------------------- batching and concurrency


def test_batcher_runs_concurrent_requests_in_one_call_and_splits_rows():
    calls = []

    def fn(items):
        calls.append(list(items))
        time.sleep(0.05)
        return {"x": np.asarray(items) * 10, "y": np.asarray(items)[:, None].repeat(2, 1)}
    b = DynamicBatcher(fn, max_batch=16, max_wait=0.2)
    try:
        futures = [b.submit([i, i + 100]) for i in range(5)]
        out = [f.result(timeout=10) for f in futures]
    finally:
        b.close()
    assert len(calls) == 1 and sorted(calls[0]) == sorted(x for i in range(5) for x in (i, i + 100))
    for i, o in enumerate(out):
        assert o["x"].tolist() == [10 * i, 10 * (i + 100)] and o["y"].shape == (2, 2)
    assert b.batch_sizes == [10]


def test_batcher_caps_batches_and_gives_each_request_the_error():
    def fn(items):
        if -1 in items:
            raise ValueError("bad item")
        return {"x": np.asarray(items)}
    b = DynamicBatcher(fn, max_batch=4, max_wait=0.1)
    try:
        futures = [b.submit([i, i]) for i in range(6)]
        assert [f.result(timeout=10)["x"].tolist() for f in futures] == [[i, i] for i in range(6)]
        assert max(b.batch_sizes) <= 4 and sum(b.batch_sizes) == 12
        assert b.submit(list(range(9))).result(timeout=10)["x"].tolist() == list(range(9))  # a big one runs alone
        bad = [b.submit([1]), b.submit([-1])]
        for f in bad:
            with pytest.raises(ValueError, match="bad item"):
                f.result(timeout=10)
        assert b.submit([2]).result(timeout=10)["x"].tolist() == [2]  # the worker lives on
    finally:
        b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b.submit([1]).result(timeout=1)


def test_concurrent_searches_share_model_calls(world, pipe, tmp_path):
    with served(world, pipe, tmp_path, max_wait_ms=300) as c:
        batcher = c.app.state.batcher
        before = batcher.calls
        results = {}

        def one(i):
            r = c.post("/v1/search", files=upload(world.images[i]), params={"top": 1})
            results[i] = r.json()["queries"][0]["results"][0]["image_id"]
        threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert results == {i: i for i in range(6)}
        assert batcher.calls - before < 6 and max(batcher.batch_sizes) > 1


def test_searches_while_adds_commit_see_whole_generations(world, pipe, tmp_path):
    from pamtri.pipeline.index import _column, open_index
    with served(world, pipe, tmp_path, max_wait_ms=1) as c:
        errors, seen = [], []
        stop = threading.Event()

        def searcher():
            while not stop.is_set():
                r = c.post("/v1/search", files=upload(world.images[1]), params={"top": 100})
                if r.status_code != 200:
                    errors.append(r.text)
                    continue
                body = r.json()
                hits = body["queries"][0]["results"]
                seen.append(body["index_size"])
                # every vector of the generation searched is there, with its own metadata row
                if len(hits) != body["index_size"] or sorted(h["image_id"] for h in hits) != list(
                        range(body["index_size"])) or any(h["image"] is None for h in hits):
                    errors.append(f"a partial generation: {body['index_size']} vs {len(hits)} results")
        threads = [threading.Thread(target=searcher) for _ in range(2)]
        for t in threads:
            t.start()
        try:
            for k in range(4):
                r = c.post("/v1/index/add", files=upload((f"add{k}a.png", encoded(".png", seed=20 + k)),
                                                         (f"add{k}b.png", encoded(".png", seed=40 + k))))
                assert r.status_code == 200, r.text
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert not errors, errors[:3]
        assert seen and set(seen) <= set(range(len(world.images), len(world.images) + 9, 2))
    idx = open_index(tmp_path / "index" / "city.faiss")
    assert len(idx) == len(_column(idx, "name")) == len(world.images) + 8
    idx.close()


# ---------------------------------------------------------------- a real server, a real browser


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(world, tmp_path_factory):
    """``pamtri serve`` in its own process on 127.0.0.1 and a random port; stopped after the module."""
    import httpx
    port = free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "pamtri", "serve", "--index", str(world.index),
                                 "--pose-weights", str(world.pose), "--reid-weights", str(world.reid),
                                 "--port", str(port), "--device", "cpu", "--precision", "fp32",
                                 "--runtime", "torch"], cwd=world.root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"pamtri serve did not start: {log.read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_real_server_process_answers_a_real_client(server, world):
    import httpx
    h = httpx.get(f"{server}/healthz").json()
    assert h["model_loaded"] and h["index_size"] == len(world.images)
    with open(world.images[9], "rb") as fh:
        r = httpx.post(f"{server}/v1/search", files={"files": ("q.jpg", fh, "image/jpeg")}, params={"top": 3})
    assert r.status_code == 200 and r.json()["queries"][0]["results"][0]["image_id"] == 9
    assert httpx.get(f"{server}/v1/images/9", params={"size": 32}).headers["content-type"] == "image/jpeg"
    r = httpx.post(f"{server}/v1/search", files={"files": ("q.jpg", b"", "image/jpeg")})
    assert (r.status_code, r.json()["detail"]) == (400, "q.jpg: empty upload (0 bytes)")
    assert httpx.get(f"{server}/healthz", headers={"Host": "rebound.example"}).status_code == 421  # DNS rebinding
    assert httpx.get(f"http://localhost:{server.rsplit(':', 1)[1]}/healthz").status_code == 200
    with socket.socket() as s:  # bound to the loopback only
        s.settimeout(1)
        other = [a for a in _own_addresses() if not a.startswith("127.")]
        if other:
            assert s.connect_ex((other[0], int(server.rsplit(":", 1)[1]))) != 0


def _own_addresses() -> list[str]:
    try:
        return socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        return []


def browser():
    """A headless Chromium driven by selenium; skipped (never in CI) when Debian's chromium, chromium-driver or
    selenium is missing."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
    except ImportError:
        missing.append("selenium")
    if missing:
        reason = (f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver; "
                  "pip install selenium)")
        if os.environ.get("CI"):
            pytest.fail(f"the browser test must run in CI: {reason}")
        pytest.skip(reason)
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def test_the_page_in_a_real_browser(server, world, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    try:
        driver.get(server + "/")
        assert "Find a vehicle" in driver.title or "find a vehicle" in driver.title
        driver.find_element(By.ID, "file").send_keys(str(world.images[6]))
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") in ("done", "error"))
        assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done", \
            driver.find_element(By.ID, "status").text
        tiles = driver.find_elements(By.CSS_SELECTOR, "#results figure.tile")
        assert len(tiles) == len(world.images) and tiles[0].get_attribute("data-image-id") == "6"
        loaded = ("return [...document.querySelectorAll('#results img')]"
                  ".every(i => i.complete && i.naturalWidth > 0)")
        wait.until(lambda d: d.execute_script(loaded))
        assert driver.find_element(By.ID, "query-kps").get_attribute("data-drawn") == "36"
        assert "camera" in tiles[0].text and "distance 0.0000" in tiles[0].text
        driver.save_screenshot(str(tmp_path / "serve-page.png"))
        # search again from the third result, other cameras only, then with a camera filter
        # (a filter change searches again by itself and redraws the grid, so the filter is set after the click)
        third = tiles[2].get_attribute("data-image-id")
        tiles[2].find_element(By.CSS_SELECTOR, "button.again").click()
        wait.until(lambda d: d.find_element(By.ID, "query-info").text.startswith(f"car{int(third):02d}.jpg"))
        wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        driver.find_element(By.ID, "exclude-same").click()

        def other_cameras_only(d):
            if d.find_element(By.TAG_NAME, "body").get_attribute("data-state") != "done":
                return None
            shown = d.execute_script("return [...document.querySelectorAll('#results figure.tile')]"
                                     ".map(t => t.innerText)")
            cams = {t.split("camera ")[1].split(" ")[0] for t in shown}
            return shown if shown and str(world.cameras[int(third)]) not in cams else None
        assert wait.until(other_cameras_only)
        # a time range (UTC date and time inputs: the index's times are Unix seconds) searches again by itself
        driver.execute_script("const t = document.getElementById('time-to'); t.value = '2026-01-01T00:03:00';"
                              "t.dispatchEvent(new Event('change'));")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results figure.tile")) <= 4
                   and d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
        early = {t.get_attribute("data-image-id") for t in driver.find_elements(By.CSS_SELECTOR, "#results .tile")}
        assert early and early <= {"0", "1", "2", "3"}
        assert (tmp_path / "serve-page.png").stat().st_size > 10_000
    finally:
        driver.quit()
