"""The README's "Your own data and model" example runs as written (copy-pasted into a shell and into
Python, from a fresh folder), with fewer epochs and images so the suite stays quick."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
SHRINK = {"--epochs 15": "--epochs 2", "epochs=15": "epochs=2"}

pytestmark = pytest.mark.slow


def _section() -> str:
    text = README.read_text()
    start = text.index("## Your own data and model")
    return text[start : text.index("\n## ", start + 1)]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", _section(), flags=re.S)


def _shrunk(code: str) -> str:
    for old, new in SHRINK.items():
        code = code.replace(old, new)
    return code


def test_the_readme_example_runs_from_the_command_line_and_in_python(tmp_path):
    bash = [b for b in _blocks("bash") if ".venv/bin/" in b]
    assert len(bash) == 3, "the example: write a folder, train, explain"
    bin_dir = Path(sys.executable).parent
    for block in bash:
        command = _shrunk(block).replace(".venv/bin/", f"{bin_dir}/")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=tmp_path, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, (command, done.stdout[-2000:], done.stderr[-2000:])
    maps = sorted((tmp_path / "outputs" / "maps").glob("nuclei_05_crop256_256_r*_c*.*"))
    assert [p.suffix for p in maps] == [".nc", ".png"]
    (python,) = _blocks("python")
    done = subprocess.run([sys.executable, "-c", _shrunk(python)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "outputs" / "maps" / "nuclei_05.nc").is_file()
    assert (tmp_path / "outputs" / "maps" / "nuclei_05.png").is_file()
