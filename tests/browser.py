"""What the browser tests share: Debian's Chromium driven by Playwright, offline, and a server on a free port.

Every request that leaves localhost is refused and recorded (:func:`offline_context`), so a page that
needs the internet (a CDN stylesheet, a font) fails its test. Playwright's own browser download is
never used: the tests skip without ``/usr/bin/chromium`` or the ``playwright`` package.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
LOCAL = ("http://localhost:", "ws://localhost:", "http://127.0.0.1:", "ws://127.0.0.1:", "data:", "blob:", "file:")

needs_chromium = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium (/usr/bin/chromium) is not installed")

# Elements wider than the box that holds them: JupyterLab output areas and bokeh/panel roots (their
# scroll width exceeds their client width when something inside is cut off or scrolls sideways).
OVERFLOWING = """(selector) => {
  const found = [];
  for (const el of document.querySelectorAll(selector)) {
    if (el.scrollWidth > el.clientWidth + 1) {
      const cell = el.closest('.jp-Cell');
      const cells = [...document.querySelectorAll('.jp-Notebook .jp-Cell')];
      found.push({cell: cell ? cells.indexOf(cell) : -1, scroll: el.scrollWidth, client: el.clientWidth,
                  text: (el.innerText || '').slice(0, 80)});
    }
  }
  return found;
}"""


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen, timeout: float, what: str = "the server") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout is not None else ""
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{output}")
        with contextlib.closing(socket.socket()) as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.25)
    raise RuntimeError(f"{what} did not open port {port} in {timeout} s")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def offline_context(playwright: Any, profile: str, width: int, height: int) -> tuple[Any, list[str]]:
    """A Chromium context whose requests outside localhost are refused; returns it and the refused URLs."""
    refused: list[str] = []
    context = playwright.chromium.launch_persistent_context(
        profile, executable_path=str(CHROMIUM), headless=True, args=ARGS, viewport={"width": width, "height": height}
    )

    def only_localhost(route: Any) -> None:
        target = route.request.url
        if target.startswith(LOCAL):
            route.continue_()
        else:
            refused.append(target)
            route.abort()

    context.route("**/*", only_localhost)
    return context, refused
