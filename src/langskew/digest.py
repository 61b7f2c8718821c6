"""A short digest of the package code a stage runs, for its rule's params.

Snakemake reruns a job when its params change, but it tracks a rule's three-line script, not the
package the script calls. Each rule therefore carries ``code_digest``, a digest of the source of
its job module and of every ``langskew`` module that module imports, directly or not (imports
inside functions included) together with the packages' ``__init__`` files, so that a change in
``study_b/perplexity.py`` reruns the perplexity jobs and the jobs that read their outputs, and
nothing else.

The digest is computed when the workflow is parsed, from the source files alone, nothing
imported (no torch): import statements are found by a line scan (any indentation, parenthesised
name lists), which parses no Python and so costs little on every dry run; a line inside a
docstring that reads like an import can only add a module, never leave one out. The digest
hashes the files' bytes, so any edit counts, comments included. Each file is read once per
process.
"""

from __future__ import annotations

import ast
import hashlib
import re
from functools import lru_cache
from pathlib import Path

PACKAGE = "langskew"
ROOT = Path(__file__).resolve().parent
DIGEST_CHARS = 12


def module_file(name: str) -> Path | None:
    """The source file of a module of this package (None for a name outside it or no file)."""
    parts = name.split(".")
    if parts[0] != PACKAGE:
        return None
    base = ROOT.joinpath(*parts[1:])
    for path in (base / "__init__.py", base.with_suffix(".py")):
        if path.is_file():
            return path
    return None


#: `from X import names` (names up to the line's end, or a parenthesised list over several
#: lines) and `import X, Y as Z`, at any indentation.
_IMPORT = re.compile(rb"^[ \t]*(?:from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n]*)"
                     rb"|import[ \t]+([^\n]*))", re.M)


def _names(text: bytes) -> list[str]:
    """Module or attribute names of an import's name list (`a as b, c`; comments and
    parentheses dropped)."""
    text = text.split(b"#", 1)[0] if b"(" not in text else re.sub(rb"#[^\n]*", b"", text)
    names = []
    for part in text.strip(b"()\\ \t\n").split(b","):
        words = part.split()
        if words:
            names.append(words[0].decode())
    return names


def _imported(name: str, path: Path, source: bytes) -> set[str]:
    """Names of the package's modules that a module's import statements reach, wherever they stand."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for origin, listed, plain in _IMPORT.findall(source):
        if plain:
            found.update(_names(plain))
            continue
        origin = origin.decode()
        level = len(origin) - len(origin.lstrip("."))
        if level:
            base = package.split(".")
            base = base[:len(base) - (level - 1)]
            rest = origin.lstrip(".")
            origin = ".".join(base + ([rest] if rest else []))
        found.add(origin)
        found.update(f"{origin}.{n}" for n in _names(listed))  # `from pkg import module`
    modules = set()
    for full in found:
        parts = full.split(".")
        for i in range(1, len(parts) + 1):  # a module and the packages it lies in
            prefix = ".".join(parts[:i])
            if module_file(prefix) is not None:
                modules.add(prefix)
    return modules


@lru_cache(maxsize=None)
def _parsed(name: str) -> tuple[bytes, frozenset[str]]:
    """(source bytes; the package modules it imports) of one module."""
    path = module_file(name)
    if path is None:
        raise ValueError(f"{name!r} is not a module of {PACKAGE} (no file below {ROOT})")
    source = path.read_bytes()
    return source, frozenset(_imported(name, path, source))


@lru_cache(maxsize=None)
def closure(name: str) -> tuple[str, ...]:
    """The module, the package modules it imports directly or not, and their packages, sorted."""
    parts = name.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    seen: set[str] = set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        todo.extend(_parsed(current)[1] - seen)
    return tuple(sorted(seen))


def digest(names: tuple[str, ...] | list[str]) -> str:
    """Short hex digest of the code of the given modules and of every package module they import."""
    h = hashlib.sha256()
    for module in sorted({m for name in names for m in closure(name)}):
        source = _parsed(module)[0]
        h.update(b"%s\0%d\0" % (module.encode(), len(source)) + source)
    return h.hexdigest()[:DIGEST_CHARS]


def script_module(script: str | Path) -> str:
    """The package module whose job function a three-line script hands to ``run``: the module
    of the script's ``from langskew.<...> import <stage>_job`` (the one that is not the workflow)."""
    tree = ast.parse(Path(script).read_bytes(), filename=str(script))
    modules = [node.module for node in tree.body if isinstance(node, ast.ImportFrom)
               and node.module and node.module.startswith(PACKAGE + ".") and node.module != f"{PACKAGE}.workflow"]
    if len(modules) != 1:
        raise ValueError(f"{script}: expected one import of a job function from {PACKAGE}, found {modules}")
    return modules[0]


def script_digest(script: str | Path) -> str:
    """The digest of the package code a rule's script runs: its job module and ``langskew.workflow``."""
    return digest((f"{PACKAGE}.workflow", script_module(script)))
