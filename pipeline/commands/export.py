"""``pamtri export onnx``: one stage's network, or both stages as one graph, as an ONNX file checked against
PyTorch; ``pamtri export triton``: a Triton model repository around the one graph."""
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
                    "--tolerance is an error and nothing is written. pipeline (--pose-weights P --reid-weights R): "
                    "both stages and every step between them as one graph: input 'images' uint8 RGB (N, H, W, 3), "
                    "crops resized by the caller to the ReID input size with OpenCV bilinear, no padding, as "
                    "`pamtri embed` resizes -> outputs 'embedding' (N, D) L2-normalised, 'keypoints' (N, 36, 3) in "
                    "the input's pixels, 'color' / 'type' logits, 'feature' (the embedding before normalisation); "
                    "its features are compared with `Pipeline.embed` on generated images (cosine >= 0.999, else "
                    "nothing is written). docs/deploy.md: DeepStream, BoxMOT, Triton, TensorRT. Needs: pip install "
                    "'pamtri[export]'.")
    o.add_argument("--stage", required=True, choices=("pose", "reid", "pipeline"),
                   help="which network to export; pipeline: both stages as one graph")
    o.add_argument("--weights", metavar="PT",
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
    o.add_argument("--input-layout", choices=("nhwc-uint8", "nhwc-float", "nchw-float"), default="nhwc-uint8",
                   help="pipeline only: the graph's input: nhwc-uint8 (default) uint8 RGB 0-255 (N, H, W, 3); "
                        "nhwc-float the same values as float32 (DeepStream's tracker ReID with netScaleFactor 1, "
                        "offsets 0, inputOrder 1); nchw-float float32 (N, 3, H, W) normalised with the ImageNet "
                        "mean/std (BoxMOT's ONNX / OpenVINO ReID backends); docs/deploy.md")
    o.add_argument("--no-sizes", action="store_true",
                   help="pipeline only: no 'sizes' input (each crop's width and height before the resize): for "
                        "consumers that send one tensor (DeepStream's tracker ReID); the pose crop is then exact "
                        "only for crops already at the input's aspect (docs/deploy.md)")
    o.add_argument("--embedding-only", action="store_true",
                   help="pipeline only: the L2-normalised embedding as the graph's only output (for consumers that "
                        "take a single output tensor, e.g. DeepStream's tracker ReID)")
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
                   help="reid / pipeline: pose checkpoint that builds the pose channels (when the ReID model uses "
                        "them; pipeline: also for the keypoints output of an RGB-only model)")
    q.add_argument("--reid-weights", metavar="PT", help="pipeline: the ReID checkpoint (--weights works too)")
    q.add_argument("--min-cosine", type=float, default=0.99, help="reid guard: mean cosine (default 0.99)")
    q.add_argument("--min-top10", type=float, default=0.95, help="reid guard: top-10 agreement (default 0.95)")
    q.add_argument("--max-px", type=float, default=0.5, help="pose guard: pixel distance (default 0.5)")
    q.add_argument("--min-within", type=float, default=0.95,
                   help="pose guard: share of visible keypoints within --max-px (default 0.95)")
    o.set_defaults(func=cmd_export_onnx)
    t = sub.add_parser(
        "triton", help="write a Triton model repository serving both stages as one ONNX graph",
        description="Write REPO_DIR/NAME/config.pbtxt (onnxruntime backend, dynamic batching, inputs and outputs "
                    "named, typed and shaped as the graph's) and REPO_DIR/NAME/1/model.onnx (the graph of `pamtri "
                    "export onnx --stage pipeline`, checked the same way). Serve it with `tritonserver "
                    "--model-repository REPO_DIR`; docs/deploy.md has a client request.")
    t.add_argument("--pose-weights", metavar="PT", help="pose checkpoint (needed when the ReID model uses pose)")
    t.add_argument("--reid-weights", required=True, metavar="PT", help="ReID checkpoint")
    t.add_argument("--out", required=True, metavar="REPO_DIR", help="model repository folder (created)")
    t.add_argument("--name", default="pamtri", help="model name (default pamtri)")
    t.add_argument("--max-batch", type=int, default=32, metavar="N", help="max_batch_size (default 32)")
    t.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: the ReID checkpoint's)")
    t.add_argument("--opset", type=int, default=17, metavar="N", help="ONNX opset version (default 17)")
    t.set_defaults(func=cmd_export_triton)


def _pipeline_weights(args: argparse.Namespace) -> str:
    """The ReID checkpoint of ``--stage pipeline``: --reid-weights (or --weights)."""
    from pamtri.common.errors import ConfigError
    if args.reid_weights and args.weights and args.reid_weights != args.weights:
        raise ConfigError("--stage pipeline: give the ReID checkpoint once (--reid-weights R)")
    if not (args.reid_weights or args.weights):
        raise ConfigError("--stage pipeline needs --reid-weights R (and --pose-weights P when the model uses pose)")
    return args.reid_weights or args.weights


def _print_parity(parity) -> None:
    if parity is None:
        print("not compared with Pipeline.embed (onnxruntime not installed or --no-check)")
        return
    kp = "" if parity.keypoint_px is None else (f"; keypoints within {parity.keypoint_px:.3g} px, "
                                                f"{100 * parity.keypoints_within:.1f}% within 0.5 px")
    print(f"onnxruntime vs Pipeline.embed (PyTorch fp32) on {parity.n} generated images: feature cosine min "
          f"{parity.cosine_min:.6f}, mean {parity.cosine_mean:.6f}{kp}")


def cmd_export_triton(args: argparse.Namespace) -> int:
    from pamtri.pipeline.deploy import write_triton_repository
    folder, parity = write_triton_repository(args.pose_weights, args.reid_weights, args.out, name=args.name,
                                             max_batch=args.max_batch, size=tuple(args.size) if args.size else None,
                                             opset=args.opset)
    print(f"Triton model repository -> {folder}: config.pbtxt, 1/model.onnx")
    _print_parity(parity)
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from pamtri.common.errors import ConfigError
    from pamtri.pipeline.export import export_pose, export_reid
    size = tuple(args.size) if args.size else None
    common = dict(size=size, opset=args.opset, check=not args.no_check, tolerance=args.tolerance)
    if args.stage != "pipeline" and not args.weights:
        raise ConfigError(f"--stage {args.stage} needs --weights PT")
    if args.stage != "pipeline" and args.reid_weights:
        raise ConfigError("--reid-weights applies to --stage pipeline (the other stages take --weights)")
    if (args.input_layout != "nhwc-uint8" or args.embedding_only or args.no_sizes) and (
            args.stage != "pipeline" or args.int8):
        raise ConfigError("--input-layout, --embedding-only and --no-sizes apply to --stage pipeline without --int8")
    if args.int8 or args.calibrate:
        return cmd_export_int8(args, common)
    parity = None
    if args.stage == "pipeline":
        from pamtri.pipeline.deploy import export_checked
        if args.model:
            raise ConfigError("--model applies to --stage pose only")
        report, parity = export_checked(args.pose_weights, _pipeline_weights(args), args.out,
                                        input_layout=args.input_layout, embedding_only=args.embedding_only,
                                        sizes=not args.no_sizes, **common)
    elif args.stage == "pose":
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
    if args.stage == "pipeline":
        _print_parity(parity)
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
    weights = _pipeline_weights(args) if args.stage == "pipeline" else args.weights
    report = export_int8(args.stage, weights, args.out, args.calibrate, guard=args.guard,
                         pose_weights=args.pose_weights, thresholds=t, runtime=args.runtime,
                         heads=args.runtime == "openvino", **common)
    measured = (f"{100 * report.within:.1f}% of visible keypoints within {t.max_px:g} px" if args.stage == "pose"
                else f"cosine {report.cosine:.4f}, top-10 agreement {report.top10:.3f}")
    if args.stage == "pipeline" and report.within is not None:
        measured += f", {100 * report.within:.1f}% of visible keypoints within {t.max_px:g} px"
    print(f"INT8 {args.stage} -> {report.path}: {measured} on {report.n_guard} guard images "
          f"(calibrated on {report.n_calibration})")
    if report.cached:
        print(f"cached for `pamtri embed --runtime openvino`: {report.cached}")
    return 0
