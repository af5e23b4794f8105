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
                   help="largest allowed max-abs difference ONNX vs PyTorch (default 1e-3)")
    o.add_argument("--no-check", action="store_true", help="skip the onnxruntime comparison")
    o.set_defaults(func=cmd_export_onnx)


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from pamtri.common.errors import ConfigError
    from pamtri.pipeline.export import export_pose, export_reid
    size = tuple(args.size) if args.size else None
    common = dict(size=size, opset=args.opset, check=not args.no_check, tolerance=args.tolerance)
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
