"""Which files of a data folder are read: the policy on symbolic links.

A data folder is read recursively, and symbolic links inside it, to files or to folders, are
skipped and never followed. Following one could pull any file of the machine into the training
data (a link to ``/etc`` or to a home folder), or a second copy of a document into another split.
Only regular files are read: FIFOs, sockets and devices are skipped too, since reading one could
block forever or never end. The path the user names (the folder, or a single data file) may itself
be a link: naming it is the user's choice. Skipped links are reported in one warning that gives
their count and the first of them.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path


def data_files(folder: str | Path, suffixes: tuple[str, ...] | None = None,
               recursive: bool = True) -> list[Path]:
    """The regular files under ``folder`` (sorted), links skipped (see the module doc).
    ``suffixes``: keep only names ending in one of them (case-insensitive)."""
    folder = Path(folder)
    found, links = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        here = Path(dirpath)
        links += [here / n for n in dirnames if (here / n).is_symlink()]
        dirnames[:] = sorted(n for n in dirnames if not (here / n).is_symlink()) if recursive else []
        for name in filenames:
            p = here / name
            if p.is_symlink():
                links.append(p)
            elif p.is_file():
                found.append(p)
    if suffixes:
        found = [p for p in found if p.suffix.lower() in suffixes]
    if links:
        warnings.warn(f"{folder}: skipped {len(links)} symbolic link(s), e.g. {links[0]}; links "
                      "inside a data folder are never followed", stacklevel=2)
    return sorted(found)
