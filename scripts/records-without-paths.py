#!/usr/bin/env python3
"""Rewrites the `libtorch` field of run records written before it stopped naming a path.

Runners up to b5aba76 recorded the loaded libtorch as `2.11.0+cu130 (/abs/path/.libtorch/lib)`:
a machine's path in committed files. The runner now records `2.11.0+cu130 (.libtorch)` (or
`$LIBTORCH`, `an installed PyTorch`, `a libtorch outside the project`). This rewrites that one
field, in place, in every `final.json` and `provenance.json` under the folders given (default:
results/), leaving every other byte as it was; re-render the tables afterwards (`just report`).
Idempotent.  usage: scripts/records-without-paths.py [FOLDER ...]
"""
import pathlib
import re
import sys

FIELD = re.compile(r'("libtorch": ")([^"(]*?) \((/[^"]*)\)(")')


def source(path: str) -> str:
    lib = pathlib.PurePosixPath(path)
    if lib.parent.name == ".libtorch":
        return ".libtorch"
    if "site-packages" in lib.parts or "dist-packages" in lib.parts:
        return "an installed PyTorch"
    return "a libtorch outside the project"


def main(folders):
    changed = 0
    for folder in folders or ["results"]:
        for path in sorted(pathlib.Path(folder).rglob("*.json")):
            if path.name not in ("final.json", "provenance.json"):
                continue
            text = path.read_text()
            new = FIELD.sub(lambda m: f"{m[1]}{m[2]} ({source(m[3])}){m[4]}", text)
            if new != text:
                path.write_text(new)
                changed += 1
    print(f"records-without-paths: {changed} record(s) rewritten")


if __name__ == "__main__":
    main(sys.argv[1:])
