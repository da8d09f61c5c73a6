"""Labelled audio (or image) collections: which file is which class, and held-out splits.

Three ways to label a folder (`list_labelled`): the parent folder is the class ("folder"), a regular
expression on the file name with a named group `label` ("pattern"; FSDD_PATTERN, DCASE_PATTERN),
or a CSV with filename / label (/ fold, / any other column) ("csv"; ESC-50's meta/esc50.csv has
filename, fold and category: pass label_column="category"). Other named groups of the pattern and
other CSV columns travel in `Item.fields` (FSDD's speaker, a CSV's group).

`split_by_group` holds out whole groups (speakers) when the items have a group field, else whole
recordings, so that what is held out was never heard in training. The linear probe
(`evaluate.linear_probe`) and the scene generator (`data.scenes`) read collections from here.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import re
from typing import List, Optional, Sequence, Tuple

import numpy as np

from l3_keras import media
from l3_keras.errors import L3Error, check_choice

LABEL_SOURCES = ("folder", "pattern", "csv")
MEDIA_TYPES = (media.AUDIO, media.IMAGE)
# Free Spoken Digit Dataset: "{digit}_{speaker}_{index}.wav".
FSDD_PATTERN = r"^(?P<label>\d+)_(?P<speaker>[A-Za-z]+)_(?P<index>\d+)\.\w+$"
# DCASE 2016 task 2 isolated sounds: "clearthroat002.wav", "keysDrop016.wav".
DCASE_PATTERN = r"^(?P<label>[A-Za-z]+)(?P<index>\d+)\.\w+$"


@dataclasses.dataclass(frozen=True)
class Item:
    """One labelled file; `fold` is the given CV fold (None: folds are drawn), `fields` the
    other named groups of the pattern or columns of the CSV (e.g. speaker)."""

    path: str
    label: str
    fold: Optional[int] = None
    fields: tuple = ()


# ----------------------------------------------------------------------------------------------
# Collections


def list_labelled(root, label_from: str = "folder", pattern: Optional[str] = None,
                  csv_path=None, filename_column: str = "filename", label_column: str = "label",
                  fold_column: Optional[str] = "fold", media_type: str = "audio") -> List[Item]:
    """Labelled files under `root`, sorted by path.

    Args:
        root: folder of files (searched recursively), or the folder CSV file names are relative to.
        label_from: "folder" (parent folder name), "pattern" (regex on the file name) or "csv".
        pattern: for "pattern": a regex with a named group `label` (else the first group).
        csv_path: for "csv": the CSV file.
        filename_column, label_column, fold_column: CSV column names (fold_column may be absent).
        media_type: "audio" or "image": which file extensions count (`media.EXTENSIONS`).

    Raises:
        L3Error: unknown source, no files, a file the pattern does not match, missing columns.
    """
    check_choice("label_from", label_from, LABEL_SOURCES)
    check_choice("media_type", media_type, MEDIA_TYPES)
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise L3Error(f"{root} is not a folder; give the folder that holds the labelled files.")
    if label_from == "csv":
        return _from_csv(root, csv_path, filename_column, label_column, fold_column)
    paths = media.find_files(root, media_type)
    if not paths:
        raise L3Error(f"No {media_type} files ({', '.join(media.EXTENSIONS[media_type])}) "
                      f"under {root}.")
    if label_from == "folder":
        return [Item(p, os.path.basename(os.path.dirname(p))) for p in paths]
    if not pattern:
        raise L3Error("label_from='pattern' needs a pattern, e.g. labelled.DCASE_PATTERN.")
    regex = re.compile(pattern)
    items = []
    for p in paths:
        match = regex.search(os.path.basename(p))
        if not match:
            raise L3Error(f"{os.path.basename(p)} does not match the label pattern {pattern!r}.")
        named = match.groupdict()
        label = named.pop("label", None) or match.group(1)
        items.append(Item(p, label, fields=tuple(sorted(named.items()))))
    return items


def _from_csv(root, csv_path, filename_column, label_column, fold_column) -> List[Item]:
    if not csv_path or not os.path.isfile(csv_path):
        raise L3Error(f"label_from='csv' needs an existing CSV file; got {csv_path!r}.")
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise L3Error(f"{csv_path} has no rows.")
    missing = [c for c in (filename_column, label_column) if c not in rows[0]]
    if missing:
        raise L3Error(f"{csv_path} lacks the column(s) {missing}; it has {sorted(rows[0])}.")
    has_fold = fold_column is not None and fold_column in rows[0]
    items = []
    for row in rows:
        path = os.path.join(root, row[filename_column])
        if not os.path.isfile(path):
            raise L3Error(f"{path} (from {csv_path}) does not exist; is --root the audio folder?")
        extra = tuple(sorted((k, v) for k, v in row.items()
                             if k not in (filename_column, label_column, fold_column)))
        items.append(Item(path, row[label_column], int(row[fold_column]) if has_fold else None,
                          extra))
    return sorted(items, key=lambda item: item.path)


def subset(items: Sequence[Item], per_class: int, seed: int = 0) -> List[Item]:
    """At most `per_class` items of every class, drawn with `seed`; sorted by path."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in sorted({item.label for item in items}):
        members = [item for item in items if item.label == label]
        keep = rng.permutation(len(members))[:per_class]
        chosen += [members[i] for i in sorted(keep)]
    return sorted(chosen, key=lambda item: item.path)



# ----------------------------------------------------------------------------------------------
# Held-out splits


def group_of(item: Item, field: str) -> Optional[str]:
    """The item's value of `field` (a pattern group or CSV column), or None when it has none."""
    return dict(item.fields).get(field)


def split_by_group(items: Sequence[Item], field: str = "speaker",
                   holdout: Optional[Sequence[str]] = None, fraction: float = 0.25,
                   seed: int = 0) -> Tuple[List[Item], List[Item]]:
    """(train, held_out) with nothing shared: whole groups, or whole recordings when ungrouped.

    Args:
        items: from `list_labelled`.
        field: the group field (FSDD: "speaker"; a CSV column such as "group").
        holdout: the groups to hold out; default the last sorted group (items with `field`).
        fraction: without `field` on the items: the share of every class's recordings held out
            (at least one), drawn with `seed`.

    Raises:
        L3Error: some items lack `field` while others have it, an unknown held-out group,
            or a split that leaves either side empty.
    """
    groups = [group_of(item, field) for item in items]
    if any(g is not None for g in groups):
        if any(g is None for g in groups):
            raise L3Error(f"Some files have no {field!r} and others do; give every file one.")
        known = sorted(set(groups))
        holdout = list(holdout or known[-1:])
        unknown = sorted(set(holdout) - set(known))
        if unknown:
            raise L3Error(f"Held-out {field} {unknown} not in the collection; it has {known}.")
        held = [g in holdout for g in groups]
    else:
        if holdout:
            raise L3Error(f"The files have no {field!r} to hold out {list(holdout)} by; use a "
                          "pattern or CSV column that names it, or hold out recordings.")
        rng = np.random.default_rng(seed)
        held = [False] * len(items)
        for label in sorted({item.label for item in items}):
            members = [i for i, item in enumerate(items) if item.label == label]
            count = max(1, int(round(fraction * len(members))))
            for i in rng.permutation(members)[:count]:
                held[i] = True
    train = [item for item, h in zip(items, held) if not h]
    test = [item for item, h in zip(items, held) if h]
    if not train or not test:
        raise L3Error(f"Holding out leaves {len(train)} training and {len(test)} held-out files; "
                      "both need some.")
    return train, test
