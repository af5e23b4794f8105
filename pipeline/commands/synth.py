"""``pamtri synth``: generate a randomized synthetic vehicle data set (VeRi-style tree with pose/ReID labels)."""
from __future__ import annotations

import argparse

DESCRIPTION = """\
Render a randomized synthetic vehicle data set with numpy + OpenCV: parametric 3D bodies of the 9 VeRi
types, 10 VeRi colours, random cameras, lighting, backgrounds and occluders, and 36 keypoints with
visibility. Writes a VeRi-style tree under --out:
  image_{train,query,test}/        <id:4>_c<camera:3>_<frame:8>_0.jpg (query images also stay in image_test)
  name_{train,query,test}.txt      image names, sorted
  label_{train,query,test}.csv     reference ReID labels (id, colour, type 1-based, 36 x (x, y, visibility))
  pose_label_{train,query,test}.csv  reference pose labels (width, height, 36 x (x, y, visibility))
  meta_{train,query,test}.csv      image,vehicle_id,camera_id,color_id,type_id,orientation_deg,domain
  synth.json                       arguments and generator version
  preview.png                      with --preview: samples with keypoints and segments
Train and test identities are disjoint; query = one test image per (identity, camera). The same --seed
gives byte-identical files whatever --workers.

`pamtri synth city --out DIR --cameras N --vehicles N --minutes M --fps F --seed S` instead writes a generated
multi-camera scene in the CityFlow MTMC layout (c001/vdo.avi, gt/gt.txt, mtsc/mtsc_sim.txt from a simulated
tracker, cam_timestamp/, topology.yaml) for `pamtri mtmc run` (docs/mtmc.md)."""


def register(subparsers) -> None:
    """Add the ``synth`` subcommand."""
    p = subparsers.add_parser("synth", help="generate a randomized synthetic vehicle data set",
                              description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", nargs="?", choices=("dataset", "city"), default="dataset",
                   help="dataset (default): a VeRi-style image set; city: a multi-camera scene (docs/mtmc.md)")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--ids", type=int, default=20, help="number of vehicle identities, >= 2 (default 20)")
    p.add_argument("--images-per-id", type=int, default=8, metavar="N", help="images per identity (default 8)")
    p.add_argument("--size", type=int, default=128, metavar="PX",
                   help="longer side of each image in pixels, >= 32 (default 128); the aspect follows the crop")
    p.add_argument("--style", choices=("synthetic", "realistic"), default="synthetic",
                   help="synthetic: clean flat backgrounds (domain 'synthetic'); realistic: textured roads, "
                        "clutter, blur, colour casts (domain 'real', for StRDAN experiments)")
    p.add_argument("--cameras", type=int, default=4, metavar="N",
                   help="number of cameras, each with its own viewpoint range and colour cast (default 4)")
    city = p.add_argument_group("synth city")
    city.add_argument("--vehicles", type=int, default=30, metavar="N", help="vehicles driving through (default 30)")
    city.add_argument("--minutes", type=float, default=1.0, metavar="M", help="length of every video (default 1)")
    city.add_argument("--fps", type=float, default=10.0, metavar="F", help="frame rate (default 10, as CityFlow)")
    city.add_argument("--width", type=int, default=480, metavar="PX", help="frame width (default 480)")
    city.add_argument("--height", type=int, default=270, metavar="PX", help="frame height (default 270)")
    city.add_argument("--frames", action="store_true", help="write img1/000001.jpg ... instead of vdo.avi")
    for flag, default, text in (("--jitter", 0.04, "simulated tracker: box jitter (fraction of the side)"),
                                ("--miss", 0.05, "simulated tracker: share of missed boxes"),
                                ("--fragment", 0.15, "simulated tracker: share of tracks broken in two"),
                                ("--switch", 0.05, "simulated tracker: share of tracks swapping ids"),
                                ("--false-rate", 2.0, "simulated tracker: false tracklets per camera-minute")):
        city.add_argument(flag, type=float, default=default, help=f"{text} (default {default})")
    p.add_argument("--test-fraction", type=float, default=0.5, metavar="F",
                   help="share of identities in the test split, 0 < F < 1 (default 0.5)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="worker processes (default 1)")
    p.add_argument("--preview", action="store_true", help="also write preview.png (a contact sheet of samples)")
    p.add_argument("--overwrite", action="store_true", help="replace a data set already in --out")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=cmd_synth)


def cmd_synth(args: argparse.Namespace) -> int:
    """Handler: generate the tree and print a one-screen summary."""
    if args.kind == "city":
        return cmd_synth_city(args)
    from pamtri.pipeline.synth import generate

    s = generate(args.out, seed=args.seed, ids=args.ids, images_per_id=args.images_per_id, size=args.size,
                 style=args.style, cameras=args.cameras, test_fraction=args.test_fraction, workers=args.workers,
                 preview=args.preview, overwrite=args.overwrite, progress=not args.no_progress)
    print(f"synth: {s['images']} images in {s['seconds']:.1f} s ({s['images_per_second']:.0f} images/s), "
          f"domain {s['domain']} -> {s['out']}")
    for split, c in s["splits"].items():
        print(f"  {split:<5} {c['images']:>6} images  {c['ids']:>5} ids  {c['cameras']:>3} cameras")
    if s["preview"]:
        print(f"  preview: {s['out']}/preview.png")
    return 0


def cmd_synth_city(args: argparse.Namespace) -> int:
    """Handler of ``synth city``: write a generated multi-camera scene."""
    from pamtri.pipeline.mtmc.synth_city import TrackerNoise, generate_city

    noise = TrackerNoise(jitter=args.jitter, miss=args.miss, fragment=args.fragment, switch=args.switch,
                         false_rate=args.false_rate)
    s = generate_city(args.out, cameras=args.cameras, vehicles=args.vehicles, minutes=args.minutes, fps=args.fps,
                      seed=args.seed, width=args.width, height=args.height, frames_only=args.frames, noise=noise,
                      overwrite=args.overwrite, progress=not args.no_progress)
    print(f"synth city: {s['cameras']} cameras x {s['frames']} frames, {s['vehicles']} vehicles in "
          f"{s['seconds']:.1f} s -> {s['out']}")
    for name, c in s["counts"].items():
        print(f"  {name}  gt {c['gt_ids']:>4} ids {c['gt_boxes']:>6} boxes   mtsc {c['mtsc_ids']:>4} ids "
              f"{c['mtsc_boxes']:>6} boxes")
    return 0
