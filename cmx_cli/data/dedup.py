"""Exact-duplicate removal, so that no held-out sequence is also a training sequence.

Gene sets repeat genes (the capsule-locus sets repeat wza, wzc, gnd in most loci). A copy of a
test sequence in training inflates every held-out metric, so `cmx train` drops exact
duplicates before splitting. Sequences compare on their tokens: case and the choice of
IUPAC ambiguity letter do not matter.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict

from cmx_cli.io.labels import LabelledSequences


def drop_duplicates(sequences: LabelledSequences) -> tuple[list[int], list[str]]:
    """Keep the first copy of each distinct sequence; drop sequences with conflicting labels.

    Args:
        sequences: Labelled sequences; earlier ones win (put held-out files first).

    Returns:
        The indices to keep, in order, and messages for people about what was dropped.
    """
    copies: dict[bytes, list[int]] = defaultdict(list)
    for index, tokens in enumerate(sequences.tokens):
        digest = hashlib.blake2b(tokens.tobytes(), digest_size=16).digest()
        copies[digest].append(index)
    drop: set[int] = set()
    n_duplicates = n_conflicting = 0
    for members in copies.values():
        if len(members) == 1:
            continue
        if len({sequences.labels[i] for i in members}) > 1:
            drop.update(members)
            n_conflicting += len(members)
        else:
            drop.update(members[1:])
            n_duplicates += len(members) - 1
    messages = []
    if n_duplicates:
        messages.append(
            f"dropped {n_duplicates} exact duplicate sequence(s), keeping the first copy "
            "(held-out files first); use --keep-duplicates to keep them"
        )
    if n_conflicting:
        messages.append(
            f"dropped {n_conflicting} sequence(s) whose identical copies carry different labels"
        )
    return [i for i in range(len(sequences.tokens)) if i not in drop], messages
