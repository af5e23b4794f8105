"""The ``index_search`` and ``index_ivf`` rows: FAISS gallery search (``pipeline.index``) on clustered vectors."""
from __future__ import annotations

import time

import numpy as np
import torch

from pamtri.pipeline.index import calibrated_nprobe, new_faiss_index

from .harness import Row, make_row


def clustered_gallery(n: int, nq: int, dim: int, ids: int, views: int = 8, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """L2-normalised (n, dim) gallery and (nq, dim) queries clustered like identities x views: a centre per
    identity, an offset per (identity, view), noise per image; float32."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((ids, dim), dtype=np.float32)
    offsets = 0.5 * rng.standard_normal((ids, views, dim), dtype=np.float32)

    def draw(m: int) -> np.ndarray:
        i, v = rng.integers(0, ids, m), rng.integers(0, views, m)
        x = centres[i] + offsets[i, v] + 0.4 * rng.standard_normal((m, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    return np.concatenate([draw(min(100_000, n - s)) for s in range(0, n, 100_000)]), draw(nq)


def _queries_per_s(search, queries: np.ndarray, k: int) -> tuple[float, np.ndarray]:
    search(queries[:8], k)  # warm-up
    t0 = time.perf_counter()
    top = search(queries, k)
    return len(queries) / (time.perf_counter() - t0), top


def _torch_top_k(gallery: np.ndarray):
    g = torch.from_numpy(gallery)

    def search(q: np.ndarray, k: int) -> np.ndarray:
        return torch.topk(torch.from_numpy(q) @ g.T, k, dim=1).indices.numpy()
    return search


def _faiss_top_k(index):
    return lambda q, k: index.search(q, k)[1]


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


def bench_index(quick: bool) -> list[Row]:
    """Flat FAISS search vs a dense torch matmul + top-k (same vectors, identical top-10), and IVF (flat and PQ)
    vs flat (nprobe calibrated as the index build does): queries/s, recall@10, bytes per vector. 1,000,000 x
    1024-d gallery, 1,000 queries (quick: 10,000 x 64-d, 100 queries)."""
    n, dim, nq, ids = (10_000, 64, 100, 250) if quick else (1_000_000, 1024, 1_000, 20_000)
    gallery, queries = clustered_gallery(n, nq, dim, ids)
    flat, _ = new_faiss_index(gallery, "flat", "cosine")
    flat.add(gallery)
    qps_flat, exact = _queries_per_s(_faiss_top_k(flat), queries, 10)
    del flat
    qps_torch, dense = _queries_per_s(_torch_top_k(gallery), queries, 10)
    same = float(np.mean([set(a) == set(b) for a, b in zip(exact, dense)]))
    rows = [make_row("index_search", qps_flat, qps_torch, "queries/s",
                     note=f"{n}x{dim} flat (exact) vs torch matmul + topk; identical top-10 for {100 * same:.1f}%")]
    parts = []
    for kind in ("ivf", "ivfpq"):
        index, params = new_faiss_index(gallery, kind, "cosine")
        index.add(gallery)
        params["nprobe"], _ = calibrated_nprobe(index, gallery, "cosine")  # as `pamtri index build` does
        qps, found = _queries_per_s(_faiss_top_k(index), queries, 10)
        code = dim * 4 if kind == "ivf" else params["m"] * params["nbits"] / 8
        parts.append((kind, qps, _recall(found, exact), code + 8, params))
        del index  # 4 GB for IVF-Flat at full size: one index at a time
    (_, qps_ivf, rec_ivf, bytes_ivf, p), (_, qps_pq, rec_pq, bytes_pq, ppq) = parts
    rows.append(make_row("index_ivf", qps_ivf, qps_flat, "queries/s",
                         note=f"IVF-Flat nlist {p['nlist']} nprobe {p['nprobe']}: recall@10 {rec_ivf:.3f}, "
                              f"{bytes_ivf:.0f} B/vector; IVF-PQ m {ppq['m']} nbits {ppq['nbits']}: "
                              f"{qps_pq:.0f} q/s ({qps_pq / qps_flat:.1f}x flat), recall@10 {rec_pq:.3f}, "
                              f"{bytes_pq:.0f} B/vector; vs flat {qps_flat:.0f} q/s"))
    return rows
