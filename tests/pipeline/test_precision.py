"""Accuracy guard of the fast path: bfloat16 autocast + channels-last against float32 on the same weights."""
import numpy as np
import torch

from pamtri.pipeline.infer import Pipeline
from pamtri.pose.codec import HeatmapCodec
from pamtri.pose.predict import PosePredictor
from pamtri.pose.weights import build_pose_model
from pamtri.reid.config import DataConfig, ModelConfig
from pamtri.reid.weights import build_model


def _vehicles(n, size=64):
    """n rendered vehicles (12 identities seen from several viewpoints): uint8 RGB, and their identity."""
    from pamtri.pipeline.synth.render import make_identity, render_sample
    identities = [make_identity(np.random.default_rng(1000 + k)) for k in range(12)]
    images = [np.ascontiguousarray(render_sample(i, identity=identities[i % 12], size=size)[0][:, :, ::-1])
              for i in range(n)]
    return images, np.arange(n) % 12


def test_bf16_embeddings_and_rankings_match_fp32(one_torch_thread):
    torch.manual_seed(0)
    pose = build_pose_model("hrnet_w18_small").eval()
    reid = build_model(ModelConfig(heatmaps=True, segments=True, keypoints=True, id_fc=256, attr_fc=64),
                       num_ids=12, num_colors=10, num_types=9).eval()
    data = DataConfig(height=64, width=64)
    images, _ = _vehicles(36)
    out = {}
    for prec, channels_last in (("fp32", False), ("bf16", True)):
        predictor = PosePredictor(pose, HeatmapCodec((64, 64), (16, 16)), flip_test=True, device="cpu", precision=prec)
        pipe = Pipeline(predictor, reid, data, batch_size=12, channels_last=channels_last)
        out[prec] = pipe.embed(images)
        reid = reid.to(memory_format=torch.contiguous_format)
        pose = pose.to(memory_format=torch.contiguous_format)
    a, b = (torch.from_numpy(out[p]["features"]) for p in ("fp32", "bf16"))
    cos = torch.nn.functional.cosine_similarity(a, b, dim=1)
    assert cos.min() > 0.999, cos.min()
    # The first 12 images query the other 24. An untrained model puts every gallery image at nearly the same
    # distance, so near-ties may swap; anything bf16 ranks in a query's top 10 must be within twice the
    # largest distance error of fp32's own top 10.
    d32, d16 = torch.cdist(a[:12], a[12:]), torch.cdist(b[:12], b[12:])
    err = (d16 - d32).abs().max()
    tenth = d32.sort(dim=1).values[:, 9:10]
    picked = d32.gather(1, d16.argsort(dim=1)[:, :10])
    assert (picked <= tenth + 2 * err).all()
