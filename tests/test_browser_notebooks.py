"""The notebooks in JupyterLab in a real headless Chromium, run as a user runs them (Run > Run All Cells).

A JupyterLab server runs on a free localhost port on a *copy* of notebooks/ (so autosave never
touches the checkout), with its settings, workspaces, runtime files and the user folder
(``$PDCR_LAB_HOME``) in a temporary folder. The window is 1280 px wide with the file browser open
(the layout a new user sees), the notebooks run in order in one user folder (06 draws what the
others stored), and for each one:

* every cell runs (no error output);
* no request leaves localhost (JavaScript and stylesheets are inline or served by the server);
* no output overflows its output area (nothing cut off or scrolling sideways);
* notebook-specific checks: 05's answers are hidden until asked for and then say what the lesson's
  results say; 06 displays its figures inline.

A screenshot of each notebook (file browser collapsed, the whole notebook) goes to the test's
temporary folder, or to ``$PDCR_LAB_SCREENSHOTS`` (e.g. docs/screenshots) when that is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest

from browser import OVERFLOWING, free_port, needs_chromium, offline_browser, serving

pytest.importorskip("playwright")
pytest.importorskip("jupyterlab")
pytest.importorskip("panel")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
NEEDS_ZOO = {"01_quickstart.ipynb", "02_compare_architectures.ipynb", "03_components.ipynb",
             "04_faithfulness.ipynb", "06_paper_figures.ipynb"}
WIDTH, HEIGHT = 1280, 900
TOKEN = "pdcr-lab-browser-test"

pytestmark = [pytest.mark.slow, needs_chromium]

# Settings a user could set in JupyterLab: no news fetched from the internet, and every cell kept in
# the page (no virtual scrolling), so that outputs below the fold are measured too.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
}

NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook on screen
PROMPTS = f"""() => [...document.querySelectorAll('{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt')].map(e => e.textContent.trim())"""
ERRORS = f"""() => [...document.querySelectorAll('{NOTEBOOK} .jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')]
  .map(e => e.innerText).filter(t => /Traceback|Error/.test(t))"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    for name, values in LAB_SETTINGS.items():
        path = root / "settings" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PDCR_LAB_RESULTS", "PDCR_LAB_FIGURES")}
    env.update(PDCR_LAB_HOME=str(root / "home"), JUPYTER_CONFIG_DIR=str(root / "jupyter_config"),
               JUPYTER_RUNTIME_DIR=str(root / "jupyter_runtime"), JUPYTER_DATA_DIR=str(root / "jupyter_data"),
               IPYTHONDIR=str(root / "ipython"))
    port = free_port()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--allow-root", f"--port={port}",
           "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}",
           f"--LabApp.user_settings_dir={root / 'settings'}", f"--LabApp.workspaces_dir={root / 'workspaces'}"]
    with serving(cmd, port, "jupyter lab", env=env):
        yield f"http://localhost:{port}", root


@pytest.fixture(scope="module")
def browser():
    with offline_browser(WIDTH, HEIGHT) as (context, refused):
        context.refused = refused
        yield context


def _shut_down_kernels(url: str) -> None:
    """Stop every kernel of the server (a closed tab leaves its kernel running)."""
    import urllib.request

    headers = {"Authorization": f"token {TOKEN}"}
    with urllib.request.urlopen(urllib.request.Request(f"{url}/api/kernels", headers=headers)) as response:
        kernels = json.load(response)
    for kernel in kernels:
        request = urllib.request.Request(f"{url}/api/kernels/{kernel['id']}", headers=headers, method="DELETE")
        urllib.request.urlopen(request).close()


def _run_all(page, timeout: float = 1200) -> list[str]:
    """Run > Run All Cells, then wait until no cell is queued or running; returns the final prompts."""
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()
    deadline, stable, prompts = time.monotonic() + timeout, 0, []
    while time.monotonic() < deadline:
        page.wait_for_timeout(1000)
        prompts = page.evaluate(PROMPTS)
        busy = any("*" in p for p in prompts) or page.locator(".jp-Notebook-ExecutionIndicator[data-status='busy']").count()
        stable = 0 if busy else stable + 1
        if stable >= 3 and all(p.strip("[]: ") for p in prompts):
            return prompts
        if stable >= 5:  # idle with cells never run: an error stopped "Run All"
            return prompts
    raise TimeoutError(f"the notebook did not finish in {timeout} s: prompts {prompts}")


def _screenshot(page, name: str, tmp_path: Path) -> Path:
    folder = Path(os.environ.get("PDCR_LAB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    page.keyboard.press("Control+b")  # collapse the file browser
    page.wait_for_timeout(500)
    tall = page.evaluate("() => document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer').scrollHeight")
    page.set_viewport_size({"width": WIDTH, "height": min(int(tall) + 160, 16000)})
    page.wait_for_timeout(1000)
    page.evaluate("() => { document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-WindowedPanel-outer').scrollTop = 0; }")
    page.wait_for_timeout(1000)
    path = folder / f"{Path(name).stem}.png"
    page.screenshot(path=str(path))
    page.set_viewport_size({"width": WIDTH, "height": HEIGHT})
    page.keyboard.press("Control+b")
    return path


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_in_jupyterlab(name, lab, browser, tmp_path):
    from pdcr_lab.dashboard._app import _zoo_names

    if name in NEEDS_ZOO and "unet" not in _zoo_names("lesions"):
        pytest.skip("the zoo has no trained unet on lesions (data/zoo)")
    if name == "08_volumes.ipynb":
        from test_notebooks import _zoo_3d

        if not _zoo_3d():
            pytest.skip("the zoo has no 3-D checkpoints (data/zoo)")
    url, root = lab
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    refused_before = len(browser.refused)
    try:
        # A workspace of its own: JupyterLab would otherwise reopen the notebooks run before.
        workspace = Path(name).stem.replace("_", "-")
        page.goto(f"{url}/lab/workspaces/{workspace}/tree/notebooks/{name}?token={TOKEN}&reset",
                  wait_until="domcontentloaded", timeout=120_000)
        page.locator(f"{NOTEBOOK} .jp-CodeCell").first.wait_for(timeout=120_000)
        page.locator(".jp-Notebook-ExecutionIndicator, .jp-KernelStatus").first.wait_for(timeout=60_000)
        page.wait_for_timeout(2000)  # the kernel connects
        prompts = _run_all(page)
        page.wait_for_timeout(2000)  # bokeh lays out the last outputs
        failures = page.evaluate(ERRORS)
        assert not failures, f"{name}: a cell failed:\n" + "\n".join(failures)
        assert all(p.strip("[]: ") for p in prompts), f"{name}: cells did not run: {prompts}"

        refused = [u for u in browser.refused[refused_before:] if not u.endswith(".ico")]
        assert not refused, f"{name}: requests left localhost: {refused}"
        overflowing = page.evaluate(OVERFLOWING, f"{NOTEBOOK} .jp-OutputArea-output")
        assert not overflowing, f"{name}: outputs wider than the notebook at {WIDTH} px: {overflowing}"
        assert not [e for e in errors if "ResizeObserver" not in e], f"{name}: JavaScript errors: {errors}"

        if name == "06_paper_figures.ipynb":  # every figure displayed inline, as a picture
            shown = page.locator(f"{NOTEBOOK} .jp-OutputArea-output img").count()
            assert shown >= 6, f"06 shows {shown} figures inline, expected its 6"
        if name == "05_teaching.ipynb":
            _check_lesson(page)
        if name == "08_volumes.ipynb":  # NiiVue draws on a canvas of its own (WebGL2, bundled: no CDN)
            canvases = page.locator(f"{NOTEBOOK} .jp-OutputArea-output canvas").count()
            assert canvases >= 1, "08: the NiiVue view drew no canvas"
        _screenshot(page, name, tmp_path)
    finally:
        page.close()
        _shut_down_kernels(url)


def _check_lesson(page) -> None:
    """05: no answer is on the page (nor in the widgets' state) until its button is pressed; then it is shown."""
    buttons = page.get_by_role("button", name="Show the answer")
    count = buttons.count()
    assert count == 4, f"05 has {count} 'Show the answer' buttons, expected one per exercise"
    notebook = page.locator(NOTEBOOK)
    assert "Answer to exercise" not in notebook.inner_text(), "an answer is on the page before it was asked for"
    assert notebook.inner_text().count("Not answered yet") == count  # the checks of the empty student cells
    for n in range(1, count + 1):
        page.get_by_role("button", name="Show the answer").first.click()
        page.get_by_text(f"Answer to exercise {n}.").wait_for(timeout=30_000)
    text = notebook.inner_text()
    assert not re.search(r"\bnan\b", text, flags=re.I), "an answer says nan"


@pytest.mark.parametrize("name", ["01_quickstart.ipynb", "05_teaching.ipynb"])
def test_notebook_in_notebook7(name, lab, browser):
    """The same server's Jupyter Notebook 7 interface: the panel controls and the ipywidgets buttons work there too."""
    pytest.importorskip("notebook")
    from pdcr_lab.dashboard._app import _zoo_names

    if name in NEEDS_ZOO and "unet" not in _zoo_names("lesions"):
        pytest.skip("the zoo has no trained unet on lesions (data/zoo)")
    url, _ = lab
    page = browser.new_page()
    refused_before = len(browser.refused)
    try:
        page.goto(f"{url}/notebooks/notebooks/{name}?token={TOKEN}", wait_until="domcontentloaded", timeout=120_000)
        page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=120_000)
        page.wait_for_timeout(3000)  # the kernel connects
        prompts = _run_all(page)
        page.wait_for_timeout(2000)
        failures = page.evaluate(ERRORS.replace(NOTEBOOK, ".jp-Notebook"))
        assert not failures, f"{name} in Notebook 7: a cell failed:\n" + "\n".join(failures)
        assert all(p.strip("[]: ") for p in prompts), f"{name} in Notebook 7: cells did not run: {prompts}"
        refused = [u for u in browser.refused[refused_before:] if not u.endswith(".ico")]
        assert not refused, f"{name} in Notebook 7: requests left localhost: {refused}"
        if name == "01_quickstart.ipynb":  # the panel/bokeh views are drawn
            page.wait_for_function("() => window.Bokeh && Bokeh.index.all_views().some("
                                   "v => v.model.title && v.model.title.text === 'click to place the RoI')", timeout=60_000)
        else:  # an ipywidgets button shows its answer
            page.get_by_role("button", name="Show the answer").first.click()
            page.get_by_text("Answer to exercise 1.").wait_for(timeout=30_000)
    finally:
        page.close()
        _shut_down_kernels(url)
