"""Randomized synthetic vehicle generator (``pamtri synth``): parametric 3D bodies of the 9 VeRi types, random
cameras, painter's-algorithm rendering with OpenCV, keypoints with visibility, VeRi-style data set trees.

Public API: :func:`generate` (write a data set tree), :func:`render_sample` (one image, BGR uint8, its (36, 3)
keypoints and meta), :func:`benchmark` (images per second on one core). See docs/synth.md.
"""
from .body import Identity, build_body, make_identity
from .dataset import META_HEADER, VERSION, benchmark, camera_for, check_args, generate, identity_for, plan
from .render import CameraProfile, View, make_camera, render_sample, render_view, sample_view

__all__ = ["Identity", "build_body", "make_identity", "META_HEADER", "VERSION", "benchmark", "camera_for",
           "check_args", "generate", "identity_for", "plan", "CameraProfile", "View", "make_camera",
           "render_sample", "render_view", "sample_view"]
