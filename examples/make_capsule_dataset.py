#!/usr/bin/env python3
"""Build a Klebsiella vs Acinetobacter capsule-locus gene dataset, split by locus.

The inputs are the coding sequences of the Kaptive capsule-locus reference databases
(kaptive-data, GPL-3+): the Klebsiella K-locus genes and the Acinetobacter K/OC-locus
genes. A header looks like::

    >KL1|wzc|complement(1..2184) label=Acinetobacter organism=Acinetobacter baumannii

The first ``|`` field is the locus. Loci repeat genes (wza, wzc, gnd recur in most of
them), so the script:

1. checks that every sequence is DNA (ACGTN and the IUPAC codes RYKMSWBDHV, any case)
   and drops, with a report, any record that is not, or is empty;
2. splits whole loci into train and test, per genus (seeded, ``--test-fraction`` of the
   loci of each genus go to test), so that no test gene comes from a training locus.
   Locus names are per genus: Klebsiella KL1 and Acinetobacter KL1 are different loci;
3. deduplicates exact sequences (case-insensitive) within and across the two files. A
   sequence found in both genera is dropped entirely and counted. A sequence found in a
   training locus is kept once, in train, and never in test; a test sequence is one that
   occurs only in test loci. So train and test share no locus and no identical sequence;
4. optionally keeps only sequences of at most ``--max-length`` bp, then subsamples
   ``--per-class`` training and ``--test-per-class`` test sequences per genus (seeded);
5. writes the training sequences of each genus to their own FASTA file and the test
   sequences of both genera to one FASTA file, wrapped at 80 columns, and prints a summary.

Headers are the original ones with two changes that make every record name unique (each
FASTA index, pyfaidx's included, keys records by the first word of the header): spaces
inside the name part (before `` label=``) become ``_`` (``KL107|ATCC BAA-1705_00008|...``
becomes ``KL107|ATCC_BAA-1705_00008|...``), and a name already used gets ``|dup2``,
``|dup3``... appended. Every header carries ``label=Genus`` (added when missing), so
``--label-regex 'label=(\\S+)'`` reads the class of a test record.

The full dataset (7,764 unique genes, about 9.5 MB of FASTA) is too big to commit.
Build it from the kaptive-data FASTA files with::

    python examples/make_capsule_dataset.py \\
        klebsiella_K_locus_CDS.fasta acinetobacter_K_OC_locus_CDS.fasta \\
        --out-dir examples/data/capsule --seed 0

which writes ``train_klebsiella.fa``, ``train_acinetobacter.fa`` and ``test.fa``.
The bundled demo data (``cmx_cli/demo_data/``) and the test data
(``tests/data/capsule_small/``) were made with this script; their READMEs give the commands.

Example:
    python examples/make_capsule_dataset.py kleb.fasta acin.fasta -o out --per-class 150 \\
        --test-per-class 40 --train-names klebsiella.fa,acinetobacter.fa --test-name query.fa
"""
from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Set, Tuple

GENERA = ("Klebsiella", "Acinetobacter")
DNA_LETTERS = frozenset("ACGTNRYKMSWBDHV")
LINE_WIDTH = 80
LABEL_PATTERN = re.compile(r"(?:^|\s)label=(\S+)")


@dataclass
class Record:
    """One gene of one locus.

    Attributes:
        genus: The class, taken from which input file the record came from.
        locus: The first ``|`` field of the header.
        name: The header's name part with spaces replaced by ``_``.
        description: The rest of the header (``label=... organism=...``).
        sequence: The letters, as in the input.
    """

    genus: str
    locus: str
    name: str
    description: str
    sequence: str

    @property
    def key(self) -> str:
        """The sequence in upper case, the key for exact deduplication."""
        return self.sequence.upper()


@dataclass
class Split:
    """The outcome of splitting and deduplicating both inputs.

    Attributes:
        train: Training records per genus, in input order.
        test: Test records per genus, in input order.
        test_loci: The (genus, locus) pairs assigned to test.
        counts: Named counts for the summary (records read, dropped, ...).
    """

    train: Dict[str, List[Record]] = field(default_factory=dict)
    test: Dict[str, List[Record]] = field(default_factory=dict)
    test_loci: Set[Tuple[str, str]] = field(default_factory=set)
    counts: Dict[str, int] = field(default_factory=dict)


def read_fasta(path: Path) -> Iterator[Tuple[str, str]]:
    """Yield (header without '>', sequence) pairs from a FASTA file.

    Args:
        path: A plain-text FASTA file.

    Yields:
        The header line and the joined sequence lines of each record.

    Raises:
        SystemExit: When sequence text comes before the first header.
    """
    header: Optional[str] = None
    lines: List[str] = []
    with open(path, encoding="ascii", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if line.startswith(">"):
                if header is not None:
                    yield header, "".join(lines)
                header, lines = line[1:].strip(), []
            elif line:
                if header is None:
                    sys.exit(f"{path}, line {number}: sequence before the first '>' header.")
                lines.append(line)
    if header is not None:
        yield header, "".join(lines)


def parse_record(header: str, sequence: str, genus: str, path: Path) -> Record:
    """Turn a header and sequence into a :class:`Record` of one genus.

    Args:
        header: The header line without '>'.
        sequence: The sequence letters.
        genus: The genus of the input file.
        path: The input file, for messages.

    Returns:
        The record; ``label=genus`` is added to the description when missing.

    Raises:
        SystemExit: When the header names a different genus in ``label=``.
    """
    name, separator, rest = header.partition(" label=")
    description = f"label={rest}" if separator else f"label={genus}"
    found = LABEL_PATTERN.search(description)
    if found and found.group(1) != genus:
        sys.exit(
            f"{path}, record '{header}': label={found.group(1)} in a file given as {genus}. "
            "Hint: give the Klebsiella file first and the Acinetobacter file second."
        )
    name = "_".join(name.split())
    return Record(genus, name.split("|", 1)[0], name, description, sequence)


def load(paths: Sequence[Path]) -> Tuple[List[Record], Dict[str, int]]:
    """Read both inputs and drop records that are empty or not DNA.

    Args:
        paths: The Klebsiella and the Acinetobacter FASTA files, in that order.

    Returns:
        The DNA records of both files in input order, and counts for the summary.
    """
    records: List[Record] = []
    counts = {"read": 0, "not_dna": 0}
    for genus, path in zip(GENERA, paths):
        for header, sequence in read_fasta(path):
            counts["read"] += 1
            bad = set(sequence.upper()) - DNA_LETTERS
            if not sequence or bad:
                counts["not_dna"] += 1
                why = "empty" if not sequence else f"letters {''.join(sorted(bad))!r}"
                print(f"dropped (not DNA: {why}): {path.name} '{header}'", file=sys.stderr)
                continue
            records.append(parse_record(header, sequence, genus, path))
    return records, counts


def split_by_locus(records: List[Record], test_fraction: float, seed: int) -> Split:
    """Assign whole loci to train or test, then deduplicate exact sequences.

    Args:
        records: DNA records of both genera, in input order.
        test_fraction: Fraction of each genus's loci that go to test.
        seed: Seed for the locus shuffle.

    Returns:
        The split, with no locus and no identical sequence shared by train and test.
    """
    rng = random.Random(seed)
    split = Split()
    for genus in GENERA:
        loci = sorted({record.locus for record in records if record.genus == genus})
        rng.shuffle(loci)
        n_test = round(len(loci) * test_fraction) if len(loci) > 1 else 0
        split.test_loci.update((genus, locus) for locus in loci[:n_test])
        split.train[genus], split.test[genus] = [], []

    genera_of: Dict[str, Set[str]] = {}
    in_train: Set[str] = set()
    for record in records:
        genera_of.setdefault(record.key, set()).add(record.genus)
        if (record.genus, record.locus) not in split.test_loci:
            in_train.add(record.key)

    kept: Set[str] = set()
    counts = {"duplicates": 0, "both_genera": 0, "test_copy_of_train": 0}
    for record in records:
        key = record.key
        if len(genera_of[key]) > 1:
            # Counted once per distinct sequence, not per copy.
            if key not in kept:
                counts["both_genera"] += 1
                kept.add(key)
            continue
        is_test = (record.genus, record.locus) in split.test_loci
        if is_test and key in in_train:
            # A test-locus gene that a training locus also carries: train keeps it.
            counts["test_copy_of_train"] += 1
            continue
        if key in kept:
            counts["duplicates"] += 1
            continue
        kept.add(key)
        (split.test if is_test else split.train)[record.genus].append(record)
    split.counts = counts
    return split


def subsample(
    records: List[Record], size: Optional[int], max_length: Optional[int], rng: random.Random
) -> List[Record]:
    """Keep records of at most ``max_length`` bp, then draw ``size`` of them.

    Args:
        records: Records of one genus and one split.
        size: How many to keep; None keeps all.
        max_length: Longest sequence kept, in bp; None keeps all lengths.
        rng: Source of the draw.

    Returns:
        The kept records, in their input order.
    """
    if max_length is not None:
        records = [record for record in records if len(record.sequence) <= max_length]
    if size is None or size >= len(records):
        return list(records)
    chosen = set(rng.sample(range(len(records)), size))
    return [record for index, record in enumerate(records) if index in chosen]


def write_fasta(path: Path, records: List[Record], used_names: Dict[str, int]) -> None:
    """Write records as FASTA wrapped at 80 columns, with unique record names.

    Args:
        path: Output file.
        records: Records to write.
        used_names: Names written so far (shared by all outputs), with their use count.
    """
    with open(path, "w", encoding="ascii", newline="\n") as handle:
        for record in records:
            name = record.name
            used_names[name] = used_names.get(name, 0) + 1
            if used_names[name] > 1:
                name = f"{name}|dup{used_names[name]}"
            handle.write(f">{name} {record.description}\n")
            for start in range(0, len(record.sequence), LINE_WIDTH):
                handle.write(record.sequence[start : start + LINE_WIDTH] + "\n")


def length_summary(records: List[Record]) -> str:
    """Return 'n=..., length min/median/max ...' for a list of records."""
    if not records:
        return "n=0"
    lengths = [len(record.sequence) for record in records]
    median = statistics.median(lengths)
    return (
        f"n={len(records):,} loci={len({record.locus for record in records}):,} "
        f"length min/median/max {min(lengths):,}/{median:,.0f}/{max(lengths):,} bp"
    )


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Example: python examples/make_capsule_dataset.py kleb.fasta acin.fasta -o out",
    )
    parser.add_argument("klebsiella", type=Path, help="Klebsiella K-locus CDS FASTA.")
    parser.add_argument("acinetobacter", type=Path, help="Acinetobacter K/OC-locus CDS FASTA.")
    parser.add_argument("-o", "--out-dir", type=Path, required=True, help="Output folder.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the split and draws.")
    parser.add_argument(
        "--test-fraction", type=float, default=0.2, help="Fraction of loci per genus for test."
    )
    parser.add_argument("--per-class", type=int, help="Training sequences kept per genus.")
    parser.add_argument("--test-per-class", type=int, help="Test sequences kept per genus.")
    parser.add_argument("--max-length", type=int, help="Longest sequence kept, in bp.")
    parser.add_argument(
        "--train-names",
        default="train_klebsiella.fa,train_acinetobacter.fa",
        help="Training file names, Klebsiella first, comma-separated.",
    )
    parser.add_argument("--test-name", default="test.fa", help="Test file name.")
    args = parser.parse_args(argv)
    args.train_names = [name.strip() for name in args.train_names.split(",")]
    if len(args.train_names) != 2 or not all(args.train_names):
        parser.error("--train-names needs two comma-separated file names")
    if not 0.0 < args.test_fraction < 1.0:
        parser.error("--test-fraction must lie between 0 and 1")
    for option in ("per_class", "test_per_class", "max_length"):
        value = getattr(args, option)
        if value is not None and value < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    for path in (args.klebsiella, args.acinetobacter):
        if not path.is_file():
            parser.error(f"no such file: {path}")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Build the dataset and print a summary.

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The exit status, 0 on success.
    """
    args = parse_args(argv)
    started = time.perf_counter()
    records, counts = load([args.klebsiella, args.acinetobacter])
    split = split_by_locus(records, args.test_fraction, args.seed)
    counts.update(split.counts)

    # One generator per draw, so that --per-class does not change which test records
    # are drawn. String seeds are hashed with SHA-512: the same on every run and platform.
    train = {
        genus: subsample(
            split.train[genus], args.per_class, args.max_length,
            random.Random(f"{args.seed}:train:{genus}"),
        )
        for genus in GENERA
    }
    test = {
        genus: subsample(
            split.test[genus], args.test_per_class, args.max_length,
            random.Random(f"{args.seed}:test:{genus}"),
        )
        for genus in GENERA
    }

    args.out_dir.mkdir(parents=True, exist_ok=True)
    used_names: Dict[str, int] = {}
    outputs = []
    for genus, name in zip(GENERA, args.train_names):
        outputs.append(args.out_dir / name)
        write_fasta(outputs[-1], train[genus], used_names)
    outputs.append(args.out_dir / args.test_name)
    write_fasta(outputs[-1], test[GENERA[0]] + test[GENERA[1]], used_names)
    renamed = sum(count - 1 for count in used_names.values())

    print(
        f"read {counts['read']:,} records; dropped {counts['not_dna']:,} not DNA, "
        f"{counts['duplicates']:,} exact duplicates, {counts['test_copy_of_train']:,} "
        f"test-locus copies of training sequences, {counts['both_genera']:,} sequences "
        f"found in both genera; {renamed:,} records renamed with |dupN"
    )
    for genus in GENERA:
        n_loci = len({record.locus for record in records if record.genus == genus})
        n_test = sum(1 for pair in split.test_loci if pair[0] == genus)
        print(f"{genus}: {n_loci:,} loci, {n_loci - n_test:,} train / {n_test:,} test")
        print(f"  unique   train {length_summary(split.train[genus])}")
        print(f"  unique   test  {length_summary(split.test[genus])}")
        print(f"  written  train {length_summary(train[genus])}")
        print(f"  written  test  {length_summary(test[genus])}")
    total = 0
    for path in outputs:
        size = path.stat().st_size
        total += size
        print(f"wrote {path} ({size / 1024:,.1f} KiB)")
    print(f"total {total / 1024:,.1f} KiB in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
