"""``pdcr-lab serve``: start the dashboard on localhost.

The page has no authentication: whoever reaches the port can run computations and read and write
the results root. So the server listens on the loopback address only, unless ``--address`` asks for
another one explicitly (and then it says, on stderr, that the page is exposed).
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..defaults import WORKING

#: The address the dashboard listens on unless told otherwise.
LOCALHOST = "127.0.0.1"
#: How often (ms) the server looks for sessions no browser holds any more.
CHECK_UNUSED_MS = 2_000
#: How long (ms) such a session is kept before it is discarded (a tab being reloaded reconnects in time).
UNUSED_LIFETIME_MS = 10_000


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
        "explain with a progress bar, browse stored results and export figures. The page has no "
        "authentication: it listens on 127.0.0.1 only, and reads and writes only inside --results.",
    )
    p.add_argument("--port", type=int, default=5006, help="port on localhost")
    p.add_argument("--show", action=argparse.BooleanOptionalAction, default=True, help="open a browser tab")
    p.add_argument("--results", type=Path, default=None,
                   help="results root: stored results (.nc) are read and written only inside it "
                   "(default: dashboard in the user folder, $PDCR_LAB_RESULTS or ~/pdcr_lab/results)")
    p.add_argument("--fine", type=int, default=WORKING.fine,
                   help=f"default number of fine draws N shown in the form (default {WORKING.fine}, the paper's)")
    p.add_argument("--address", default=LOCALHOST,
                   help="address to listen on (default 127.0.0.1). Anything else exposes the page, which has "
                   "no authentication, to whoever can reach that address")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST[:PORT]",
                   help="a further host the page may be opened from (with --address; repeatable)")
    p.set_defaults(func=_run_serve)


def _is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address  # an IPv6 address in a URL


def server_options(port: int, address: str = LOCALHOST, origins: Sequence[str] = ()) -> dict[str, Any]:
    """The options of ``panel.serve`` for the dashboard: where it listens, who may connect, and how
    soon the sessions no browser holds are discarded.

    A non-loopback `address` is accepted, since it was asked for, but a warning goes to stderr: the
    page has no authentication.

    Parameters
    ----------
    port : int
        The port.
    address : str
        The address to listen on (default: the loopback address).
    origins : sequence of str
        Further ``host[:port]`` the page may be opened from (its websocket is refused otherwise).

    Examples
    --------
    >>> options = server_options(5006)
    >>> options["address"], sorted(options["websocket_origin"])
    ('127.0.0.1', ['127.0.0.1:5006', 'localhost:5006'])
    """
    allowed = [f"localhost:{port}", f"127.0.0.1:{port}", f"{_host(address)}:{port}"]
    if not _is_loopback(address):
        print(f"WARNING: the PdCR dashboard listens on {_host(address)}:{port}, not on localhost only. The page has "
              "no authentication: anyone who can reach this address can run computations and read and write the "
              "results root. Do not expose the port (use an SSH tunnel instead).", file=sys.stderr, flush=True)
    allowed = list(dict.fromkeys([*allowed, *origins]))
    return {
        "port": port,
        "address": address,
        "websocket_origin": allowed,
        "check_unused_sessions_milliseconds": CHECK_UNUSED_MS,
        "unused_session_lifetime_milliseconds": UNUSED_LIFETIME_MS,
    }


def serve(
    results: str | os.PathLike | None = None,
    *,
    port: int = 5006,
    address: str = LOCALHOST,
    origins: Sequence[str] = (),
    show: bool = True,
    threaded: bool = False,
    **dashboard: Any,
) -> Any:
    """Serve the dashboard (what ``pdcr-lab serve`` runs); blocks unless `threaded`.

    Parameters
    ----------
    results : str or os.PathLike, optional
        The results root (:class:`pdcr_lab.dashboard.Dashboard`); default ``dashboard`` in
        :func:`pdcr_lab.locations.results_dir`.
    port : int
        The port.
    address : str
        The address to listen on (:func:`server_options`).
    origins : sequence of str
        Further hosts the page may be opened from.
    show : bool
        Open a browser tab.
    threaded : bool
        Serve from a background thread and return it (``.stop()`` ends it).
    **dashboard
        Further options of the dashboard (``fine=``, ``models=``, ...).
    """
    import panel as pn

    from ..locations import results_dir
    from ._app import create_app

    results = results_dir() / "dashboard" if results is None else results

    pn.extension(inline=True)  # no CDN: the page must work without internet
    root = Path(results).expanduser().resolve()
    options = server_options(port, address, origins)
    where = "localhost" if _is_loopback(address) else _host(address)
    print(f"PdCR dashboard on http://{where}:{port} (results root {root}); Ctrl+C stops it", flush=True)

    def page():  # a plain function: panel renders a functools.partial as text, not as an app
        return create_app(root, **dashboard)

    return pn.serve({"/": page}, show=show, title="PdCR lab", threaded=threaded, **options)


def _run_serve(args: argparse.Namespace) -> int:
    serve(args.results, port=args.port, address=args.address, origins=args.allow_websocket_origin, show=args.show,
          fine=args.fine)
    return 0
