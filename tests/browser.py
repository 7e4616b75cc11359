"""What the browser tests share: Debian's Chromium driven by Playwright, offline, and a server on a free port.

Every request that leaves localhost is refused and recorded (:func:`offline_context`), so a page that
needs the internet (a CDN stylesheet, a font) fails its test. Playwright's own browser download is
never used: the tests skip without ``/usr/bin/chromium`` or the ``playwright`` package.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
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


@contextlib.contextmanager
def serving(cmd: list[str], port: int, what: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen]:
    """Run a server command until the block ends; the block starts once it listens on `port`."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port, proc, timeout=180, what=what)
        yield proc
    finally:
        stop(proc)


@contextlib.contextmanager
def offline_browser(width: int, height: int) -> Iterator[tuple[Any, list[str]]]:
    """A fresh offline Chromium context (:func:`offline_context`) in a throw-away profile."""
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="pdcr-chromium-")
    try:
        with sync_playwright() as p:
            context, refused = offline_context(p, profile, width, height)
            try:
                yield context, refused
            finally:
                context.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


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
