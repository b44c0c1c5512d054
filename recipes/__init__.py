"""The recipes that ship with lhp-tf, found by name: ``lhp train 300w``, ``lhp flops wflw``.

This folder is the repository's ``recipes/`` and installs as the package ``lhp_tf.recipes``
(``setup.cfg`` maps it, as it maps ``converters/`` and ``quantize/``), so a plain
``pip install`` carries the recipes and every command takes a recipe by name from any folder.
A name is the file's path below this folder without ``.yaml`` (``synthetic-300w``,
``ablations/wflw-fusion-group``); a path to a YAML file works everywhere a name does.
``lhp recipes`` lists them with the first line of each file's header comment.

Imports neither TensorFlow nor PyYAML.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

SUFFIX = ".yaml"


def folder() -> Path:
    """Where the packaged recipes are (a real folder in both editable and wheel installs)."""
    return Path(str(resources.files(__name__)))


def names() -> list[str]:
    """Every packaged recipe name, sorted (``base``, which only others inherit from, included)."""
    root = folder()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{SUFFIX}"))


def path_of(name: str) -> Path | None:
    """The packaged file of recipe ``name`` (with or without ``.yaml``), or None."""
    stem = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
    if not stem or stem.startswith("/") or "\\" in stem or ".." in stem.split("/"):
        return None
    candidate = folder() / f"{stem}{SUFFIX}"
    return candidate if candidate.is_file() else None


def summary(path: Path) -> str:
    """The first line of a recipe's header comment ('' when it has none)."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="lhp recipes", description=__doc__.splitlines()[0])
    p.add_argument("--path", action="store_true", help="print each recipe's file path too")
    args = p.parse_args(argv)
    width = max(len(n) for n in names())
    for name in names():
        path = folder() / f"{name}{SUFFIX}"
        line = f"{name:<{width}}  {summary(path)}"
        print(f"{line}  [{path}]" if args.path else line)
    return 0


if __name__ == "__main__":
    from lhp_tf.errors import run_main

    sys.exit(run_main(main, prog="lhp recipes"))
