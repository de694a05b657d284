"""Pretraining data: the source plan, the segment sampler and the record sampler.

Data: tests/data/pretrain_lambda.fa holds the first 20 kb of phage lambda (one contig, no N,
no lowercase); tests/data/pretrain_umaydis_genes.fa holds 7 short records of U. maydis chr01
(6 gene spans and one intergenic piece with a 100 bp N gap). Lowercase and N variants are
written to tmp_path by the tests that need them.
"""
from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import numpy as np
import pytest

from cmx_cli import alphabet
from cmx_cli.data.pretrain_sources import PretrainSequence, plan_sources
from cmx_cli.data.samplers import RecordSampler, SegmentSampler, make_sampler
from cmx_cli.errors import CmxError
from tests.helpers import check_user_error

DATA = Path(__file__).parent / "data"
LAMBDA = "pretrain_lambda.fa"
GENES = "pretrain_umaydis_genes.fa"
LAMBDA_CONTIG = "NC_001416.1_1-20000"
SOURCE = re.compile(r"^(?P<path>.+):(?P<contig>[^:]+):(?P<start>\d+)-(?P<end>\d+)(?P<rc>\(-\))?$")


def read_letters(path: Path) -> dict[str, str]:
    """A plain FASTA parser, independent of pyfaidx, for expected values."""
    records: dict[str, list[str]] = {}
    name = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            name = line[1:].split()[0]
            records[name] = []
        elif line:
            records[name].append(line)
    return {key: "".join(lines) for key, lines in records.items()}


def write_fasta(path: Path, records: dict[str, str], width: int = 70) -> Path:
    with path.open("w") as handle:
        for name, letters in records.items():
            handle.write(f">{name}\n")
            for start in range(0, len(letters), width):
                handle.write(letters[start : start + width] + "\n")
    return path


def parse(sequence: PretrainSequence) -> tuple[str, int, int, bool]:
    match = SOURCE.match(sequence.source)
    assert match, sequence.source
    return match["contig"], int(match["start"]), int(match["end"]), bool(match["rc"])


def check_against_reference(sequence: PretrainSequence, letters: str) -> bool:
    """Check tokens and soft-mask flags against the 1-based source coordinates."""
    _, start, end, flipped = parse(sequence)
    piece = letters[start - 1 : end]
    tokens, lowercase = alphabet.encode(piece), alphabet.lowercase_mask(piece)
    if flipped:
        tokens, lowercase = alphabet.reverse_complement(tokens), lowercase[::-1]
    assert sequence.tokens.dtype == np.uint8 and sequence.lowercase.dtype == bool
    assert np.array_equal(sequence.tokens, tokens)
    assert np.array_equal(sequence.lowercase, lowercase)
    return flipped


# --- the plan -------------------------------------------------------------------------------


def draw(sampler, n, rng):
    """The first ``n`` sequences of an endless epoch (reverse-complemented as in training)."""
    return list(itertools.islice(sampler.epoch(None, rng), n))


def test_auto_picks_records_for_a_gene_set(data_copy):
    plan = plan_sources([data_copy(GENES)], val_fraction=0.1, max_length=4096, seed=0)
    assert plan.mode == "records" and plan.validation_rule == "records"
    assert len(plan.train) == 6 and len(plan.validation) == 1
    names = {region.contig for region in plan.train + plan.validation}
    assert len(names) == 7
    assert "validation: a random 10% of records (1 of 7" in plan.describe()


def test_auto_picks_segments_when_a_record_is_too_long(data_copy):
    path = data_copy(LAMBDA)
    plan = plan_sources([path], val_fraction=0.1, max_length=4096)
    assert plan.mode == "segments" and plan.validation_rule == "tail"
    assert [region.label() for region in plan.train] == [f"{path}:{LAMBDA_CONTIG}:1-18000"]
    assert [region.label() for region in plan.validation] == [
        f"{path}:{LAMBDA_CONTIG}:18001-20000"
    ]
    assert plan.describe().endswith(
        "validation: the last 10% of each of 1 contig(s) (2,000 bp)"
    )
    assert plan.to_dict()["validation"] == [f"{path}:{LAMBDA_CONTIG}:18001-20000"]


def test_auto_samples_segments_of_a_single_record_that_cannot_be_split(data_copy):
    path = data_copy(LAMBDA)
    assert plan_sources([path], max_length=100_000).mode == "segments"
    with pytest.raises(CmxError) as error:
        plan_sources([path], mode="records", max_length=100_000)
    check_user_error(error.value, path, "segments")


def test_records_mode_rejects_a_record_longer_than_max_length(data_copy):
    path = data_copy(GENES)
    with pytest.raises(CmxError) as error:
        plan_sources([path], mode="records", max_length=1000)
    message = check_user_error(error.value, path, "um10944", "1,395 bp", "segments")
    assert "--max-length" in message


def test_record_hold_out_is_seeded(data_copy):
    path = data_copy(GENES)
    plans = [plan_sources([path], val_fraction=0.3, seed=seed) for seed in range(8)]
    again = plan_sources([path], val_fraction=0.3, seed=0)
    assert again == plans[0]
    held_out_sets = {tuple(region.contig for region in plan.validation) for plan in plans}
    assert len(held_out_sets) > 1
    for plan in plans:
        assert len(plan.validation) == 2  # round(7 * 0.3)
        assert not {r.contig for r in plan.train} & {r.contig for r in plan.validation}


def test_whole_contigs_are_held_out_with_five_or_more(data_copy):
    path = data_copy(GENES)
    plan = plan_sources([path], val_fraction=0.3, mode="segments", seed=3)
    assert plan.validation_rule == "contigs"
    lengths = {name: len(letters) for name, letters in read_letters(path).items()}
    for region in plan.train + plan.validation:  # whole contigs only
        assert region.start == 0 and region.end == lengths[region.contig]
    assert len(plan.validation) == 2 and len(plan.train) == 5
    assert not {r.contig for r in plan.train} & {r.contig for r in plan.validation}
    assert "2 of 7 whole contigs held out at random" in plan.describe()


def test_validation_files_take_precedence(data_copy):
    genes, genome = data_copy(GENES), data_copy(LAMBDA)
    plan = plan_sources([genes], [genome], val_fraction=0.1, max_length=100_000)
    assert plan.validation_rule == "files" and plan.mode == "records"
    assert len(plan.train) == 7
    assert [region.label() for region in plan.validation] == [f"{genome}:{LAMBDA_CONTIG}"
                                                              ":1-20000"]
    assert str(genome) in plan.describe()


def test_a_file_both_for_training_and_validation_is_an_error(data_copy):
    path = data_copy(GENES)
    with pytest.raises(CmxError) as error:
        plan_sources([path], [path])
    check_user_error(error.value, path)


def test_no_validation_when_the_fraction_is_zero(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], val_fraction=0.0, max_length=4096)
    assert plan.validation == () and plan.train[0].length == 20_000
    assert "validation: none" in plan.describe()
    with pytest.raises(ValueError):
        make_sampler(plan, "validation", min_length=64)


# --- segments -------------------------------------------------------------------------------


@pytest.fixture
def soft_masked_lambda(tmp_path):
    """Lambda with bases 5,001-7,000 soft-masked (lowercase), so the flags can be checked."""
    letters = read_letters(DATA / LAMBDA)[LAMBDA_CONTIG]
    letters = letters[:5000] + letters[5000:7000].lower() + letters[7000:]
    return write_fasta(tmp_path / "lambda_soft.fa", {LAMBDA_CONTIG: letters}), letters


def test_segments_match_the_reference_on_both_strands(soft_masked_lambda):
    path, letters = soft_masked_lambda
    plan = plan_sources([path], val_fraction=0.1, max_length=2048)
    with make_sampler(plan, "train", min_length=256) as sampler:
        segments = draw(sampler, 300, np.random.default_rng(0))
    flipped = [check_against_reference(segment, letters) for segment in segments]
    sd = math.sqrt(300 * 0.25)
    assert abs(sum(flipped) - 150) <= 4 * sd  # reverse complement with probability 0.5
    assert any(segment.lowercase.any() for segment in segments)
    assert all(segment.source.startswith(f"{path}:{LAMBDA_CONTIG}:") for segment in segments)


def test_no_reverse_complement_when_switched_off(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], max_length=2048)
    sampler = make_sampler(plan, "train", min_length=256, reverse_complement=False)
    segments = draw(sampler, 100, np.random.default_rng(1))
    assert not any(parse(segment)[3] for segment in segments)
    sampler.close()


def test_lengths_are_bounded_and_log_normal(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], max_length=4096)
    sampler = make_sampler(plan, "train", min_length=64)
    n = 2000
    lengths = np.array([len(s) for s in draw(sampler, n, np.random.default_rng(2))])
    assert lengths.min() >= 64 and lengths.max() <= 4096
    # The median of log length is log of the geometric mean of the bounds (512 bp); the
    # standard error of a sample median is about 1.2533 sigma / sqrt(n).
    sigma = (math.log(4096) - math.log(64)) / 4
    assert abs(np.median(np.log(lengths)) - math.log(512)) <= 4 * 1.2533 * sigma / math.sqrt(n)
    # Two sigma beyond each bound are clipped to it: P(Z > 2) = 0.02275 at each end.
    for bound in (64, 4096):
        count = int((lengths == bound).sum())
        assert abs(count - n * 0.02275) <= 4 * math.sqrt(n * 0.02275 * (1 - 0.02275))
    sampler.close()


def test_training_segments_never_overlap_the_held_out_region(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], val_fraction=0.1, max_length=4096)
    with make_sampler(plan, "train", min_length=512) as sampler:
        ends = [parse(s)[2] for s in draw(sampler, 600, np.random.default_rng(3))]
    assert max(ends) <= 18_000
    assert max(ends) > 17_000  # segments do reach the boundary, so the test has teeth


def test_validation_set_is_fixed(data_copy):
    path = data_copy(LAMBDA)
    plan = plan_sources([path], val_fraction=0.1, max_length=4096)
    first = make_sampler(plan, "validation", min_length=256).validation_set(8000, seed=5)
    with make_sampler(plan, "validation", min_length=256) as sampler:
        second = sampler.validation_set(8000, seed=5)
        draw(sampler, 10, np.random.default_rng(0))  # drawing in between changes nothing
        third = sampler.validation_set(8000, seed=5)
    assert [s.source for s in first] == [s.source for s in second] == [s.source for s in third]
    assert all(np.array_equal(a.tokens, b.tokens) for a, b in zip(first, second))
    assert sum(map(len, first)) >= 8000 > sum(map(len, first[:-1]))
    letters = read_letters(path)[LAMBDA_CONTIG]
    for segment in first:
        _, start, end, flipped = parse(segment)
        assert not flipped and start > 18_000 and end <= 20_000
        check_against_reference(segment, letters)


def test_epoch_stops_at_the_token_budget(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], max_length=1024)
    sampler = make_sampler(plan, "train", min_length=64)
    segments = list(sampler.epoch(10_000, np.random.default_rng(4)))
    total = sum(map(len, segments))
    assert total >= 10_000 and total - len(segments[-1]) < 10_000
    sampler.close()


def test_segments_with_too_much_n_are_skipped(tmp_path):
    letters = read_letters(DATA / LAMBDA)[LAMBDA_CONTIG]
    letters = letters[:5000] + "N" * 10_000 + letters[15_000:]
    path = write_fasta(tmp_path / "gapped.fa", {"gapped": letters})
    plan = plan_sources([path], val_fraction=0.0, max_length=1000)
    sampler = make_sampler(plan, "train", min_length=100, max_n=0.1)
    segments = draw(sampler, 200, np.random.default_rng(5))
    shares = [np.mean(segment.tokens == alphabet.N) for segment in segments]
    assert max(shares) <= 0.1
    assert sampler.skipped > 0
    sampler.close()


def test_a_genome_of_n_gives_up_with_a_hint(tmp_path):
    path = write_fasta(tmp_path / "gap.fa", {"gap": "N" * 5000})
    sampler = SegmentSampler(
        plan_sources([path], val_fraction=0.0).train, 100, 1000, max_consecutive_skips=50
    )
    with pytest.raises(CmxError) as error:
        draw(sampler, 1, np.random.default_rng(6))
    check_user_error(error.value, path, "--max-n")
    assert sampler.skipped == 50
    sampler.close()


def test_regions_shorter_than_the_minimum_length_are_an_error(data_copy):
    path = data_copy(LAMBDA)
    plan = plan_sources([path], val_fraction=0.1, max_length=4096)
    with pytest.raises(CmxError) as error:
        make_sampler(plan, "validation", min_length=3000)  # the held-out tail is 2,000 bp
    check_user_error(error.value, path, "3,000")


def test_a_long_length_is_cut_to_the_longest_region(data_copy):
    plan = plan_sources([data_copy(LAMBDA)], val_fraction=0.1, max_length=16_384)
    sampler = make_sampler(plan, "validation", min_length=1000)
    lengths = [len(s) for s in sampler.validation_set(20_000, seed=0)]
    assert max(lengths) == 2000
    sampler.close()


def test_an_invalid_letter_names_the_record(data_copy):
    path = data_copy("fasta_protein.fa")
    with pytest.raises(CmxError) as error:
        plan_sources([path], val_fraction=0.0, mode="records", max_length=100)
    check_user_error(error.value, path, "prot1")


# --- records --------------------------------------------------------------------------------


@pytest.fixture
def soft_masked_genes(tmp_path):
    """The gene set with the first 200 bases of every record soft-masked."""
    records = read_letters(DATA / GENES)
    records = {name: letters[:200].lower() + letters[200:] for name, letters in records.items()}
    return write_fasta(tmp_path / "genes_soft.fa", records, width=60), records


def test_records_are_read_whole_with_their_flags(soft_masked_genes):
    path, records = soft_masked_genes
    plan = plan_sources([path], val_fraction=0.3, max_length=4096, seed=1)
    sampler = make_sampler(plan, "train")
    assert isinstance(sampler, RecordSampler) and len(sampler) == 5
    epoch = list(sampler.epoch(None, np.random.default_rng(7)))
    names = sorted(sequence.source.split(":")[-1].removesuffix("(-)") for sequence in epoch)
    assert names == sorted(region.contig for region in plan.train)  # each record once
    for sequence in epoch:
        name = sequence.source.split(":")[-1].removesuffix("(-)")
        tokens = alphabet.encode(records[name])
        lowercase = alphabet.lowercase_mask(records[name])
        if sequence.source.endswith("(-)"):
            tokens, lowercase = alphabet.reverse_complement(tokens), lowercase[::-1]
        assert np.array_equal(sequence.tokens, tokens)
        assert np.array_equal(sequence.lowercase, lowercase)
    sampler.close()


def test_record_validation_set_is_in_file_order_and_unflipped(soft_masked_genes):
    path, records = soft_masked_genes
    plan = plan_sources([path], val_fraction=0.3, max_length=4096, seed=1)
    with make_sampler(plan, "validation") as sampler:
        sequences = sampler.validation_set()
        assert [s.source for s in sequences] == [f"{path}:{r.contig}" for r in plan.validation]
        assert all(s.lowercase[:200].all() for s in sequences)  # not reverse-complemented
        budget = sampler.validation_set(n_tokens=100, seed=2)
        assert len(budget) == 1
        assert [s.source for s in budget] == [s.source for s in sampler.validation_set(100, 2)]


def test_record_epoch_with_a_token_budget_repeats_records(data_copy):
    plan = plan_sources([data_copy(GENES)], val_fraction=0.0, max_length=4096)
    with make_sampler(plan, "train") as sampler:
        sequences = list(sampler.epoch(20_000, np.random.default_rng(8)))  # > 7,901 bp
        assert sum(map(len, sequences)) >= 20_000
        assert len(sequences) > len(sampler)
        assert len(draw(sampler, 3, np.random.default_rng(9))) == 3


def test_a_letter_that_is_not_dna_anywhere_in_a_genome_stops_the_plan(tmp_path):
    # Segments would seldom cover position 30,001; the plan reads every record first.
    rng = np.random.default_rng(0)
    bases = "".join(rng.choice(list("ACGT"), 40_000))
    bases = bases[:30_000] + "X" + bases[30_001:]
    path = tmp_path / "genome.fa"
    path.write_text(">chr\n" + "\n".join(bases[i:i + 60] for i in range(0, 40_000, 60)) + "\n")
    with pytest.raises(CmxError) as error:
        plan_sources([path], mode="segments", max_length=256)
    check_user_error(error.value, "genome.fa", "'chr'", "'X'", "30,001")
