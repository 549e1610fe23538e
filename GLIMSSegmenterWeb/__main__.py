"""``python -m GLIMSSegmenterWeb``: start the GLIMS Segmenter web app.

    python -m GLIMSSegmenterWeb [--data DIR] [--host 127.0.0.1] [--port 8080]

Binds 127.0.0.1 unless told otherwise; on any other address every request needs the access token printed at
start (open the printed URL). Runs without a display: VTK renders off screen through EGL.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

__all__ = ["main", "parseArguments"]


def parseArguments(argv: list[str] | None = None) -> argparse.Namespace:
    from glims.runoptions import DEVICES

    from .security import DEFAULT_UPLOAD_LIMIT_MB

    parser = argparse.ArgumentParser(
        prog="python -m GLIMSSegmenterWeb",
        description="GLIMS Segmenter in the browser (3D Slicer core via trame-slicer).",
    )
    parser.add_argument(
        "--data", type=Path, help="a folder of cases on the server to offer (one case per subfolder of image files)"
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this computer only; any other needs the access token)",
    )
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    parser.add_argument(
        "--token",
        help="access token to require (default: a random one when --host is not "
        "local); also read from $GLIMS_WEB_TOKEN",
    )
    parser.add_argument(
        "--home", type=Path, help="glims user folder (models, training set); default: $GLIMS_HOME or the platform's"
    )
    parser.add_argument("--device", default="auto", choices=DEVICES, help="default compute device of the engine")
    parser.add_argument(
        "--demo-size",
        type=int,
        default=128,
        metavar="N",
        help="edge of the synthetic sample case in voxels (default 128, at least 32)",
    )
    parser.add_argument(
        "--max-upload-mb",
        type=int,
        default=DEFAULT_UPLOAD_LIMIT_MB,
        help=f"largest total upload in MB (default {DEFAULT_UPLOAD_LIMIT_MB})",
    )
    args = parser.parse_args(argv)
    if args.demo_size < 32:
        parser.error("--demo-size must be at least 32")
    if args.data is not None and not args.data.is_dir():
        parser.error(f"--data {args.data}: not a folder")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parseArguments(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("GLIMSSegmenterWeb", "GLIMSSegmenterLib"):
        logging.getLogger(name).setLevel(logging.INFO)
    if not os.environ.get("DISPLAY"):
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

    from .app import GlimsWebApp, WebOptions
    from .security import isLocalHost, newAccessToken
    from .session import SessionFolder

    token = args.token or os.environ.get("GLIMS_WEB_TOKEN") or (None if isLocalHost(args.host) else newAccessToken())
    session = SessionFolder()
    options = WebOptions(
        dataFolder=args.data,
        glimsHome=args.home,
        demoSize=args.demo_size,
        uploadLimitMb=args.max_upload_mb,
        device=args.device,
        accessToken=token,
    )
    sys.argv = sys.argv[:1]  # trame reads the command line too: it gets only what start() is given
    app = GlimsWebApp(options, session)
    server = app.server

    def announce(**_):
        host = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
        url = f"http://{host}:{server.port}/index.html" + (f"?token={token}" if token else "")
        print(f"GLIMS Segmenter is running: open {url}", flush=True)

    server.controller.on_server_ready.add(announce)
    try:
        server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False, timeout=0)
    finally:
        session.remove()
    return 0


if __name__ == "__main__":
    sys.exit(main())
