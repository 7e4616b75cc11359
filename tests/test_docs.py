"""Documentation checks: every public parameter is documented, examples exist, the method is cited right.

* Every public function, class and public method of every module of :mod:`pdcr_lab` documents each
  of its parameters in a numpydoc ``Parameters`` section (a small parser of our own, below: no
  Sphinx needed). Public = listed in the module's ``__all__``, or, for modules without one, defined
  there under a name without a leading underscore. A class's constructor parameters are checked
  when the class is a dataclass or its docstring has a ``Parameters`` section (not for a
  ``Protocol``, whose section describes its ``__call__``); they may also be documented under
  ``Attributes`` or, for dataclass fields, by a ``#:`` comment (the Sphinx convention).
  ``self``/``cls`` and underscore names are exempt; ``*args``/``**kwargs`` only count as documented
  when the docstring names them.
* At least :data:`MIN_EXAMPLES` docstrings of the package carry a ``>>>`` example (the doctests run in
  CI: ``pytest --doctest-modules pdcr_lab``).
* The method specification is cited as ``docs/method.md``, never under its upstream file name.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
from pathlib import Path
from typing import Any

import pdcr_lab

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(pdcr_lab.__file__).resolve().parent
MIN_EXAMPLES = 30
#: Sections whose entries document parameters (``Attributes`` only for class constructors).
PARAMETER_SECTIONS = ("Parameters", "Other Parameters")
CLASS_SECTIONS = (*PARAMETER_SECTIONS, "Attributes")


# -- a minimal numpydoc parser ---------------------------------------------------------------------
def sections(doc: str) -> dict[str, list[str]]:
    """Numpydoc sections of a cleaned docstring: title -> body lines (a header is a title line
    followed by a line of dashes)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, list[str]] = {}
    current = None
    i = 0
    while i < len(lines):
        line = lines[i]
        following = lines[i + 1].strip() if i + 1 < len(lines) else ""
        if line.strip() and following and set(following) == {"-"} and len(following) >= 3:
            current = line.strip()
            out.setdefault(current, [])
            i += 2
            continue
        if current is not None:
            out[current].append(line)
        i += 1
    return out


def documented_names(doc: str, titles: tuple[str, ...] = PARAMETER_SECTIONS) -> set[str]:
    """Names given by the entries of the sections `titles`: ``name : type``, ``a, b : int``, ``*args``.

    An entry is a line at the section's own indentation (descriptions are indented below it).
    """
    names: set[str] = set()
    found = sections(doc)
    for title in titles:
        body = found.get(title, [])
        indents = [len(line) - len(line.lstrip()) for line in body if line.strip()]
        if not indents:
            continue
        base = min(indents)
        for line in body:
            if not line.strip() or len(line) - len(line.lstrip()) != base:
                continue
            head = line.split(" : ", 1)[0] if " : " in line else line
            head = head.rstrip(":")
            for part in head.split(","):
                name = part.strip().lstrip("*").strip("`")
                if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                    names.add(name)
    return names


def field_comments(cls: type) -> set[str]:
    """Dataclass fields documented by a ``#:`` comment on the line(s) just above them or at their end."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return set()
    names: set[str] = set()
    pending = False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending = True
            continue
        match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)\s*:", stripped)
        if match and (pending or "#:" in stripped):
            names.add(match.group(1))
        pending = False
    return names


# -- walking the public API ------------------------------------------------------------------------
def modules() -> list[Any]:
    """Every module of the package (``pkgutil.walk_packages``); modules whose optional extra is
    not installed are skipped."""
    found = [pdcr_lab]
    for info in pkgutil.walk_packages(pdcr_lab.__path__, prefix="pdcr_lab."):
        if info.name.endswith(".__main__"):  # importing it would run the command line
            continue
        try:
            found.append(importlib.import_module(info.name))
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.split(".")[0] == "pdcr_lab":
                raise
    return found


def public_objects(module: Any) -> list[tuple[str, Any]]:
    """(name, object) of the module's public functions and classes."""
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            n for n, v in vars(module).items()
            if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        ]
    out = []
    for name in names:
        obj = getattr(module, name, None)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            out.append((name, obj))
    return out


def _undocumented(func: Any, doc: str, documented: set[str], label: str, *, skip_first: bool) -> list[str]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    missing = []
    params = list(signature.parameters.values())
    if skip_first and params:
        params = params[1:]
    for p in params:
        if p.name in ("self", "cls") or p.name.startswith("_") or p.name in documented:
            continue
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and re.search(rf"\*{{1,2}}{p.name}\b", doc or ""):
            continue
        missing.append(f"{label}: {p.name}")
    return missing


def _methods(cls: type) -> list[tuple[str, Any, bool]]:
    """Public methods defined in `cls` itself: (name, function, whether the first parameter is bound)."""
    out = []
    for name, raw in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(raw, staticmethod):
            out.append((name, raw.__func__, False))
        elif isinstance(raw, classmethod):
            out.append((name, raw.__func__, True))
        elif inspect.isfunction(raw):
            out.append((name, raw, True))
    return out


def undocumented_parameters() -> list[str]:
    """Every (module.name: parameter) of the public API without documentation."""
    missing: list[str] = []
    seen: set[int] = set()
    for module in modules():
        for name, obj in public_objects(module):
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            home = f"{obj.__module__}.{obj.__qualname__}"
            if inspect.isfunction(obj):
                doc = inspect.getdoc(obj) or ""
                missing += _undocumented(obj, doc, documented_names(doc), home, skip_first=False)
                continue
            doc = inspect.getdoc(obj) or ""
            is_dataclass = dataclasses.is_dataclass(obj)
            # A Protocol is never instantiated: its Parameters section describes its __call__.
            is_protocol = bool(getattr(obj, "_is_protocol", False))
            if not is_protocol and (is_dataclass or "Parameters" in sections(doc)):
                init_doc = obj.__init__.__doc__ if "__init__" in vars(obj) else ""
                documented = documented_names(doc, CLASS_SECTIONS) | documented_names(init_doc or "")
                if is_dataclass:
                    documented |= field_comments(obj)
                init = obj if is_dataclass else obj.__init__
                missing += _undocumented(init, doc + (init_doc or ""), documented, home, skip_first=not is_dataclass)
            for method_name, func, bound in _methods(obj):
                method_doc = inspect.getdoc(getattr(obj, method_name)) or ""
                missing += _undocumented(
                    func, method_doc, documented_names(method_doc), f"{home}.{method_name}", skip_first=bound
                )
    return sorted(set(missing))


# -- the tests -------------------------------------------------------------------------------------
def test_parser_reads_numpydoc_entries():
    doc = """Summary.

    Parameters
    ----------
    a, b : int
        Two numbers.
    *args
        Anything.
    c
        Untyped.

    Returns
    -------
    d : int
    """
    assert documented_names(doc) == {"a", "b", "args", "c"}


def test_every_public_parameter_is_documented():
    missing = undocumented_parameters()
    assert not missing, f"{len(missing)} undocumented parameters:\n" + "\n".join(missing)


def docstrings_with_examples() -> list[str]:
    """``path:line`` of every module, class and function docstring of the package holding ``>>>``."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in [tree, *ast.walk(tree)]:
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False)
                if doc and ">>>" in doc:
                    found.append(f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}")
    return sorted(set(found))


def test_enough_docstrings_have_examples():
    found = docstrings_with_examples()
    assert len(found) >= MIN_EXAMPLES, f"only {len(found)} docstrings with >>> examples: {found}"


def repository_files() -> list[Path]:
    """Files of the working tree that git would track (tracked or untracked, not ignored)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.splitlines()
        return [ROOT / p for p in listed if (ROOT / p).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", "build", "dist"}
        files = []
        for folder, dirs, names in os.walk(ROOT):
            dirs[:] = [d for d in dirs if d not in skip and not d.endswith(".egg-info")]
            files += [Path(folder) / name for name in names]
        return files


def test_method_is_cited_as_docs_method_md():
    upstream = "METHOD" + ".md"  # spelled apart so that this file does not match itself
    offenders = []
    for path in repository_files():
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if upstream in line:
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "cite the method as docs/method.md:\n" + "\n".join(offenders)
    assert (ROOT / "docs" / "method.md").is_file()
