"""``pamtri serve``: the search service and its page over an index (FastAPI + uvicorn, the ``serve`` extra)."""
from __future__ import annotations

import argparse
import logging
import sys

from pamtri.pipeline.cli import add_pipeline_args, pipeline_options

log = logging.getLogger(__name__)
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def register(subparsers) -> None:
    s = subparsers.add_parser(
        "serve", help="HTTP search service and web page over an index (search, embed, add; docs/serve.md)",
        description="Serve an index over HTTP: POST /v1/search, /v1/embed, /v1/index/add, GET /v1/images/{id}, "
                    "/healthz, the OpenAPI docs at /docs and a search page at /. Concurrent requests share "
                    "model calls (dynamic batching); searches go on while an add commits. "
                    "Needs `pip install -e \".[serve]\"`.")
    s.add_argument("--index", required=True, metavar="IDX", help="a `pamtri index build` index")
    s.add_argument("--pose-weights", help="pose checkpoint (default: the one the index records)")
    s.add_argument("--reid-weights", help="ReID checkpoint (default: the one the index records; must be the "
                                          "index's model)")
    s.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--token-file", metavar="F",
                   help="file holding the bearer token that POST /v1/index/add requires (default: no token)")
    s.add_argument("--max-upload-mb", type=float, default=8.0, metavar="MB",
                   help="largest request body accepted (default 8)")
    s.add_argument("--max-wait-ms", type=float, default=5.0, metavar="MS",
                   help="how long a model call waits for more requests to batch with (default 5)")
    s.add_argument("--images-dir", metavar="DIR",
                   help="where images added through the service are kept (default IDX.images/)")
    add_pipeline_args(s)
    s.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from pamtri.pipeline.serve.app import ServeConfig, create_app, read_token
    except ImportError as exc:
        from pamtri.common.errors import ConfigError
        raise ConfigError(f"pamtri serve needs the serve extra ({exc.name} is missing): "
                          "pip install -e \".[serve]\"") from None
    token = read_token(args.token_file) if args.token_file else None
    if args.host not in LOOPBACK and token is None:
        print(f"pamtri serve: warning: binding {args.host} without --token-file: anyone who can reach this "
              "port can add images to the index", file=sys.stderr)
    config = ServeConfig(index=args.index, reid_weights=args.reid_weights, pose_weights=args.pose_weights,
                         token=token, max_upload_mb=args.max_upload_mb, max_wait_ms=args.max_wait_ms,
                         images_dir=args.images_dir, pipeline_options=pipeline_options(args),
                         allowed_hosts=("127.0.0.1", "localhost", "[::1]") if args.host in LOOPBACK else None)
    app = create_app(config)
    log.info("serving %s on http://%s:%d (page at /, API docs at /docs)", args.index, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")
    return 0
