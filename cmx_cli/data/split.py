"""Train/validation/test splits: stratified from one seed, saved with the run.

A split is one word per sequence: ``train``, ``val`` or ``test``. It is written to the run
directory as ``split.tsv`` (name, source, label, split) so a run can be reproduced, resumed
and audited.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from cmx_cli.errors import CmxError
from cmx_cli.io.output import atomic_output

SPLITS = ("train", "val", "test")


@dataclass
class SplitTable:
    """Every item of a run (sequence or variant) and the split it is in, in input order.

    Attributes:
        names: A name per item, unique within its source.
        sources: Where each item came from (a file).
        labels: Each item's label, as written to split.tsv.
        splits: ``train``, ``val`` or ``test`` per item.
    """

    names: list[str]
    sources: list[str]
    labels: list
    splits: list[str]

    def members(self, split: str) -> list[int]:
        """Indices of one split's items."""
        return [index for index, name in enumerate(self.splits) if name == split]

    def write(self, path: Path) -> None:
        """Write ``split.tsv``."""
        write_split(path, self.names, self.sources, self.labels, self.splits)

    def saved_in(self, path: Path) -> bool:
        """Whether ``split.tsv`` at ``path`` assigns every item to the same split.

        Raises:
            CmxError: When the file is missing or malformed.
        """
        return read_split(path) == {(source, name): split for source, name, split
                                    in zip(self.sources, self.names, self.splits)}


def stratified_split(
    labels: Sequence[str], val_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """Assign each sequence to a split, keeping class proportions in each.

    Within each class the members are shuffled with the seed; the first
    round(n·test_fraction) go to test, the next round(n·val_fraction) to validation, the
    rest to training. A class too small to give each split a member keeps them in training.

    Args:
        labels: Class label of each sequence.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the test set.
        seed: Random seed.

    Returns:
        The split name of each sequence.
    """
    rng = np.random.default_rng(seed)
    assignment = ["train"] * len(labels)
    by_class: dict[str, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    for label in sorted(by_class):
        members = np.asarray(by_class[label])[rng.permutation(len(by_class[label]))]
        n_test = int(round(len(members) * test_fraction))
        n_val = int(round(len(members) * val_fraction))
        if n_test + n_val >= len(members):  # keep at least one training example
            n_test = n_val = 0
        for index in members[:n_test]:
            assignment[index] = "test"
        for index in members[n_test : n_test + n_val]:
            assignment[index] = "val"
    return assignment



def stratified_group_split(
    labels: Sequence[str], groups: Sequence[str], val_fraction: float, test_fraction: float,
    seed: int,
) -> list[str]:
    """Like :func:`stratified_split`, but every group (a locus, a genome) lands whole in one
    split, so related sequences never straddle training and held-out data.

    Each group belongs to the class most of its members carry. Within each class the groups
    are shuffled with the seed and taken for test until that class's test share reaches
    round(n·test_fraction) sequences, then for validation likewise; the rest train. The
    shares are therefore approximate, by whole groups.

    Args:
        labels: Class label of each sequence.
        groups: Group of each sequence.
        val_fraction: Share of each class for validation.
        test_fraction: Share of each class for the test set.
        seed: Random seed.

    Returns:
        The split name of each sequence.
    """
    rng = np.random.default_rng(seed)
    members: dict[str, list[int]] = {}
    for index, group in enumerate(groups):
        members.setdefault(group, []).append(index)
    groups_of_class: dict[str, list[str]] = {}
    for group in sorted(members):
        group_labels = [labels[i] for i in members[group]]
        majority = max(sorted(set(group_labels)), key=group_labels.count)
        groups_of_class.setdefault(majority, []).append(group)
    split_of_group: dict[str, str] = {}
    for label in sorted(groups_of_class):
        class_groups = [groups_of_class[label][i]
                        for i in rng.permutation(len(groups_of_class[label]))]
        size = sum(len(members[g]) for g in class_groups)
        targets = (("test", round(size * test_fraction)), ("val", round(size * val_fraction)))
        position = 0
        for split, target in targets:
            taken = 0
            # Keep at least one group for training.
            while taken < target and position < len(class_groups) - 1:
                split_of_group[class_groups[position]] = split
                taken += len(members[class_groups[position]])
                position += 1
        for group in class_groups[position:]:
            split_of_group[group] = "train"
    return [split_of_group[group] for group in groups]


def contig_split(
    contigs: Sequence[str], val_contigs: Sequence[str], test_contigs: Sequence[str]
) -> list[str]:
    """Hold out whole contigs: the protocol for variants on a genome, where neighbouring
    variants share their context and a random split would leak it.

    Args:
        contigs: The contig of each item.
        val_contigs: Contigs for validation.
        test_contigs: Contigs for the test set.

    Returns:
        The split name of each item (``train`` for every other contig).
    """
    overlap = sorted(set(val_contigs) & set(test_contigs))
    if overlap:
        raise CmxError(f"contigs {', '.join(overlap)} are both validation and test contigs",
                       "give each held-out contig to one of --val-contigs and --test-contigs")
    split_of = {**{name: "val" for name in val_contigs}, **{name: "test" for name in test_contigs}}
    return [split_of.get(contig, "train") for contig in contigs]


def write_split(path: Path, names, sources, labels, splits) -> None:
    """Write ``split.tsv``: one row per sequence, in input order (atomically: a failed
    write leaves no half of it)."""
    with atomic_output(path) as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["name", "source", "label", "split"])
        writer.writerows(zip(names, sources, labels, splits))


def read_split(path: Path) -> dict[tuple[str, str], str]:
    """Read ``split.tsv`` into {(source, name): split}.

    Raises:
        CmxError: When the file is missing or malformed.
    """
    if not path.is_file():
        raise CmxError(f"{path}: the run has no split file", "resume only runs made by `cmx train`.")
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or not {"name", "source", "split"} <= set(rows[0]):
        raise CmxError(f"{path}: no rows with the columns name, source, split",
                       "the run directory is damaged; start a new run.")
    return {(row["source"], row["name"]): row["split"] for row in rows}
