"""``pamtri export onnx``: one stage's network as an ONNX file, checked against PyTorch."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a stage's network for deployment (ONNX)",
                              description="Export trained networks to other runtimes.")
    sub = p.add_subparsers(dest="export_command", metavar="FORMAT")
    sub.required = True
    o = sub.add_parser(
        "onnx", help="write one stage's network as an ONNX file (dynamic batch axis)",
        description="Export one stage to ONNX with a dynamic batch axis and a fixed image size. pose: input "
                    "'image' (N, 3, H, W), a normalised RGB crop -> output 'heatmaps' (N, 36, H/4, W/4); flip test "
                    "and peak decoding are not part of the graph. reid: input 'images' (N, C, H, W), the "
                    "normalised RGB + heatmap/segment channels stacked as the model was trained (C = 3, 16, 39 "
                    "or 52), and 'keypoints' (N, 108) in [-0.5, 0.5] when the model uses the keypoint vector -> "
                    "output 'embedding' (N, D), the test-time feature. The preprocessing facts (size, mean/std, "
                    "...) are stored as JSON in the ONNX metadata key 'pamtri'. When onnxruntime is installed "
                    "the ONNX model is run on random input and compared with PyTorch; a difference above "
                    "--tolerance is an error and nothing is written. Needs: pip install 'pamtri[export]'.")
    o.add_argument("--stage", required=True, choices=("pose", "reid"), help="which network to export")
    o.add_argument("--weights", required=True, metavar="PT",
                   help="checkpoint: `pamtri pose train` / `pamtri reid train` output (best.pt, last.pt), a file "
                        "from `pamtri weights convert`, or an official file (pose: with --model)")
    o.add_argument("--out", required=True, metavar="ONNX", help="output .onnx file (written atomically)")
    o.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                   help="input height and width in pixels (default: the checkpoint's input size; pose: "
                        "multiples of 32)")
    o.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    o.add_argument("--model", metavar="NAME",
                   help="pose only: HRNet name for weights that store no pamtri config (e.g. hrnet_w32)")
    o.add_argument("--tolerance", type=float, default=1e-3, metavar="T",
                   help="largest allowed max-abs difference ONNX vs PyTorch, relative to the output's largest "
                        "magnitude where that exceeds 1 (default 1e-3)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    q = o.add_argument_group(
        "INT8", "post-training static quantisation (onnxruntime: QDQ ONNX; openvino: NNCF, an OpenVINO IR), "
                "written only when an accuracy guard on "
                "images disjoint from the calibration set passes: ReID: cosine to the fp32 features and top-10 "
                "agreement of the rankings among the guard images; pose: visible keypoints (fp32 confidence >= "
                "0.5) decoded within --max-px of fp32")
    q.add_argument("--int8", action="store_true", help="write the INT8 model (needs --calibrate)")
    q.add_argument("--calibrate", metavar="DIR", help="calibration images (any sizes; searched recursively)")
    q.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="the runtime the INT8 model is for (default onnxruntime). openvino: --out NAME.xml (+ "
                        "NAME.bin; reid: with the colour/type outputs), also cached next to the weights, where "
                        "`pamtri embed --runtime openvino` finds and runs it; needs pip install 'pamtri[openvino]'")
    q.add_argument("--guard", metavar="DIR",
                   help="guard images, disjoint from --calibrate (default: every 4th --calibrate image, held out)")
    q.add_argument("--pose-weights", metavar="PT",
                   help="reid only: pose checkpoint that builds the pose channels (when the ReID model uses them)")
    q.add_argument("--min-cosine", type=float, default=0.99, help="reid guard: mean cosine (default 0.99)")
    q.add_argument("--min-top10", type=float, default=0.95, help="reid guard: top-10 agreement (default 0.95)")
    q.add_argument("--max-px", type=float, default=0.5, help="pose guard: pixel distance (default 0.5)")
    q.add_argument("--min-within", type=float, default=0.95,
                   help="pose guard: share of visible keypoints within --max-px (default 0.95)")
    o.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from pamtri.common.errors import ConfigError
    from pamtri.pipeline.export import export_pose, export_reid
    size = tuple(args.size) if args.size else None
    common = dict(size=size, opset=args.opset, check=not args.no_check, tolerance=args.tolerance)
    if args.int8 or args.calibrate:
        return cmd_export_int8(args, common)
    if args.stage == "pose":
        report = export_pose(args.weights, args.out, model_name=args.model, **common)
    else:
        if args.model:
            raise ConfigError("--model applies to --stage pose only (ReID checkpoints describe their model)")
        report = export_reid(args.weights, args.out, **common)

    def fmt(shapes):
        return ", ".join(f"{n} {tuple(s)}" for n, s in shapes.items())
    print(f"{args.stage} -> {report.path}: inputs {fmt(report.inputs)}; outputs {fmt(report.outputs)}")
    if report.max_abs_diff is None:
        print("not checked against PyTorch (onnxruntime not installed or --no-check)")
    else:
        print(f"onnxruntime vs PyTorch on random input: max abs diff {report.max_abs_diff:.3g} "
              f"(tolerance {report.tolerance:g})")
    return 0


def cmd_export_int8(args: argparse.Namespace, common: dict) -> int:
    from pamtri.common.errors import ConfigError
    from pamtri.pipeline.quantize import Thresholds, export_int8
    if not (args.int8 and args.calibrate):
        raise ConfigError("--int8 and --calibrate DIR go together")
    t = Thresholds(cosine=args.min_cosine, top10=args.min_top10, max_px=args.max_px, within=args.min_within)
    if args.stage == "pose":
        print(f"guard: >= {100 * t.within:g}% of visible keypoints within {t.max_px:g} px of fp32")
    else:
        print(f"guard: cosine to fp32 >= {t.cosine:g}, top-10 agreement >= {t.top10:g}")
    if args.model:
        raise ConfigError("--int8 needs a checkpoint that describes its model (no --model)")
    report = export_int8(args.stage, args.weights, args.out, args.calibrate, guard=args.guard,
                         pose_weights=args.pose_weights, thresholds=t, runtime=args.runtime,
                         heads=args.runtime == "openvino", **common)
    measured = (f"{100 * report.within:.1f}% of visible keypoints within {t.max_px:g} px" if args.stage == "pose"
                else f"cosine {report.cosine:.4f}, top-10 agreement {report.top10:.3f}")
    print(f"INT8 {args.stage} -> {report.path}: {measured} on {report.n_guard} guard images "
          f"(calibrated on {report.n_calibration})")
    if report.cached:
        print(f"cached for `pamtri embed --runtime openvino`: {report.cached}")
    return 0
