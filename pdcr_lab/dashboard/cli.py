"""``pdcr-lab serve``: start the dashboard on localhost."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``serve`` command to the ``pdcr-lab`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        The sub-command collection of the ``pdcr-lab`` parser.
    """
    p = subparsers.add_parser(
        "serve",
        help="start the dashboard in the browser (localhost)",
        description="Serve the PdCR dashboard on localhost: choose dataset, image and models, click the RoI, "
        "explain with a progress bar, browse stored results and export figures.",
    )
    p.add_argument("--port", type=int, default=5006, help="port on localhost")
    p.add_argument("--show", action=argparse.BooleanOptionalAction, default=True, help="open a browser tab")
    p.add_argument("--results", type=Path, default=Path("results"), help="folder of stored results (.nc)")
    p.add_argument("--fine", type=int, default=10, help="default number of fine draws N shown in the form")
    p.set_defaults(func=_run_serve)


def _run_serve(args: argparse.Namespace) -> int:
    import panel as pn

    from ._app import create_app

    pn.extension(inline=True)  # no CDN: the page must work without internet
    origins = [f"localhost:{args.port}", f"127.0.0.1:{args.port}"]
    print(f"PdCR dashboard on http://localhost:{args.port} (results in {args.results.resolve()}); Ctrl+C stops it", flush=True)
    def page():  # a plain function: panel renders a functools.partial as text, not as an app
        return create_app(args.results, fine=args.fine)

    pn.serve(
        {"/": page},
        port=args.port,
        address="127.0.0.1",
        show=args.show,
        websocket_origin=origins,
        title="PdCR lab",
        threaded=False,
    )
    return 0
