"""Tests for cmx_cli.io.fasta: tokens, compression, index placement and every user error."""
from __future__ import annotations

import gzip
import os
import shutil
import stat
import tempfile
from pathlib import Path

import numpy as np
import pysam
import pytest

from cmx_cli.errors import CmxError
from cmx_cli.io import fasta_index as fasta_index_module
from cmx_cli.io.fasta import FastaRecord, count_records, iter_records, open_fasta
from tests.helpers import check_user_error

DATA = Path(__file__).parent / "data"
A, C, G, T, N = 0, 1, 2, 3, 4


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def bgzip(source: Path, target: Path) -> Path:
    pysam.tabix_compress(str(source), str(target), force=True)
    return target


# ---------------------------------------------------------------- reading good files


def test_mixed_file_gives_exact_tokens_names_and_descriptions(data_copy):
    records = list(iter_records(data_copy("fasta_mixed.fa"), with_lowercase=True))
    assert [record.name for record in records] == ["seq1", "seq2", "seq3"]
    # seq1 follows a ';' comment and seq3 a blank line: neither leaks into the header.
    assert [record.description for record in records] == [
        "seq1 first record: two full lines, a short one, N and lowercase",
        "seq2 IUPAC codes RYKMSWBDHV",
        "seq3",
    ]
    # ACGTACGTAC GTNNNNacgt acGU: multi-line, N, lowercase, U read as T.
    assert records[0].tokens.tolist() == [
        A, C, G, T, A, C, G, T, A, C, G, T, N, N, N, N, A, C, G, T, A, C, G, T
    ]
    assert records[0].lowercase.tolist() == [False] * 16 + [True] * 6 + [False] * 2
    assert records[1].tokens.tolist() == [N] * 13  # every IUPAC code, both cases
    assert records[1].lowercase.tolist() == [False] * 10 + [True] * 3
    assert records[2].tokens.tolist() == [A, C, G, T]
    assert all(record.tokens.dtype == np.uint8 for record in records)
    assert [len(record) for record in records] == [24, 13, 4]


def test_lowercase_is_only_returned_when_asked_for(data_copy):
    record = list(iter_records(data_copy("fasta_mixed.fa")))[0]
    assert isinstance(record, FastaRecord)
    assert record.lowercase is None


def test_crlf_line_endings(tmp_path):
    path = write(tmp_path / "windows.fa", b">a first\r\nACGT\r\nac\r\n>b\r\nGG\r\n")
    records = list(iter_records(path, with_lowercase=True))
    assert [(record.name, record.description) for record in records] == [
        ("a", "a first"), ("b", "b")
    ]
    assert records[0].tokens.tolist() == [A, C, G, T, A, C]


@pytest.mark.parametrize("suffix", [".fa.gz", ".fa.bgz"])
def test_bgzip_copy_reads_like_the_plain_file(data_copy, tmp_path, suffix):
    plain = data_copy("fasta_mixed.fa")
    compressed = bgzip(plain, tmp_path / f"mixed{suffix}")
    expected = list(iter_records(plain, with_lowercase=True))
    got = list(iter_records(compressed, with_lowercase=True))
    assert [(r.name, r.description) for r in got] == [(r.name, r.description) for r in expected]
    for mine, theirs in zip(got, expected):
        assert np.array_equal(mine.tokens, theirs.tokens)
        assert np.array_equal(mine.lowercase, theirs.lowercase)
    assert Path(f"{compressed}.fai").is_file()
    assert Path(f"{compressed}.gzi").is_file()


def test_real_orchid_records(data_copy):
    records = list(iter_records(data_copy("labels_orchids.fa")))
    assert [len(record) for record in records] == [740, 753, 765, 755, 759, 750]
    assert records[0].description == "Z78533 genus=Cypripedium"


def test_index_is_created_when_missing(data_copy):
    path = data_copy("fasta_mixed.fa")
    index = Path(f"{path}.fai")
    assert not index.exists()
    assert count_records(path) == 3
    assert index.is_file()


def test_a_failed_index_build_leaves_no_index_and_no_scratch(data_copy):
    # pyfaidx writes part of the index before it meets the duplicate name: none of it may
    # stay, beside the file or in a scratch directory, or the next reader would trust it.
    path = data_copy("fasta_duplicate.fa")
    with pytest.raises(CmxError):
        count_records(path)
    assert sorted(entry.name for entry in path.parent.iterdir()) == [path.name]


def test_index_appears_whole_under_its_name(data_copy, monkeypatch):
    # Readers that look while the index is being built (other torchrun ranks) see no index,
    # never part of one: it is renamed into place when complete.
    path = data_copy("fasta_mixed.fa")
    index = Path(f"{path}.fai")
    seen = []
    real_replace = os.replace

    def replace(source, target):
        seen.append((Path(target), index.exists(), Path(source).read_text()))
        real_replace(source, target)

    monkeypatch.setattr(fasta_index_module.os, "replace", replace)
    count_records(path)
    assert [(target, existed) for target, existed, _ in seen] == [(index, False)]
    assert seen[0][2] == index.read_text() and index.read_text().count("\n") == 3


def test_a_checked_index_older_than_its_fasta_is_used_quietly(tmp_path):
    # Rewriting a FASTA with records of the same lengths leaves a valid index that is older
    # than the file: cmx checks it and uses it, and pyfaidx's mtime warning is not shown
    # (warnings are errors in the suite).
    path = tmp_path / "q.fa"
    path.write_text(">q\nACGTACGTAC\n")
    assert [r.tokens.tolist() for r in iter_records(path)] == [[0, 1, 2, 3] * 2 + [0, 1]]
    path.write_text(">q\nTTTTACGTAC\n")
    index = tmp_path / "q.fa.fai"
    os.utime(index, (path.stat().st_mtime - 10, path.stat().st_mtime - 10))
    assert [r.tokens.tolist() for r in iter_records(path)] == [[3] * 4 + [0, 1, 2, 3, 0, 1]]


def test_open_fasta_keeps_case_and_returns_strings(data_copy):
    with open_fasta(data_copy("fasta_mixed.fa")) as fasta:
        assert fasta.get_seq("seq1", 17, 24) == "acgtacGU"


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "bgzf"])
def test_stale_index_is_rebuilt(tmp_path, compress):
    source = write(tmp_path / "source.fa", b">a\nACGT\n>b\nGG\n")
    path = bgzip(source, tmp_path / "x.fa.gz") if compress else source
    assert count_records(path) == 2
    write(source, b">a_longer_name\nTTTTTTTT\nTT\n>b\nCC\n>c\nA\n")
    if compress:
        bgzip(source, path)
    old = path.stat().st_mtime - 100
    for index in (Path(f"{path}.fai"), Path(f"{path}.gzi")):
        if index.exists():
            os.utime(index, (old, old))
    records = list(iter_records(path))
    assert [record.name for record in records] == ["a_longer_name", "b", "c"]
    assert records[0].tokens.tolist() == [T] * 10


# ------------------------------------------------------------- read-only directories


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory that cannot be written; its FASTA has no index yet.

    Where chmod does not stop writes (root with CAP_DAC_OVERRIDE), the permission check
    is simulated by making os.access deny this directory; the test still sees where the
    index files really go.
    """
    directory = tmp_path / "readonly"
    directory.mkdir()
    shutil.copyfile(DATA / "fasta_mixed.fa", directory / "mixed.fa")
    bgzip(directory / "mixed.fa", directory / "mixed.fa.gz")
    directory.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    if _can_create_file_in(directory):
        real_access = os.access

        def access(path, mode, *args, **kwargs):
            if Path(path) == directory and mode & os.W_OK:
                return False
            return real_access(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield directory
    directory.chmod(stat.S_IRWXU)


def _can_create_file_in(directory: Path) -> bool:
    probe = directory / "probe"
    try:
        probe.touch()
    except PermissionError:
        return False
    probe.unlink()
    return True


@pytest.mark.parametrize("name", ["mixed.fa", "mixed.fa.gz"])
def test_read_only_directory_puts_the_index_in_the_cache(read_only_dir, tmp_path, name):
    path = read_only_dir / name
    assert [record.name for record in iter_records(path)] == ["seq1", "seq2", "seq3"]
    assert sorted(read_only_dir.iterdir()) == [read_only_dir / "mixed.fa",
                                               read_only_dir / "mixed.fa.gz"]
    cache = tmp_path / "cache" / "cmx" / "fai"
    suffixes = {".fai", ".gzi"} if name.endswith(".gz") else {".fai"}
    indexes = sorted(cache.iterdir())
    assert {index.suffix for index in indexes} == suffixes
    assert all(index.name.endswith(f"-{name}{index.suffix}") for index in indexes)

    # A second read reuses the cached index instead of building another.
    mtimes = [index.stat().st_mtime_ns for index in indexes]
    assert count_records(path) == 3
    assert sorted(cache.iterdir()) == indexes
    assert [index.stat().st_mtime_ns for index in indexes] == mtimes


def test_changed_file_in_read_only_directory_gets_a_fresh_index(read_only_dir, tmp_path):
    path = read_only_dir / "mixed.fa"
    assert count_records(path) == 3
    read_only_dir.chmod(stat.S_IRWXU)
    write(path, b">only\nGATTACA\n")
    read_only_dir.chmod(stat.S_IRUSR | stat.S_IXUSR)
    records = list(iter_records(path))
    assert [(record.name, len(record)) for record in records] == [("only", 7)]
    assert len(list((tmp_path / "cache" / "cmx" / "fai").iterdir())) == 2


def test_fresh_index_beside_a_read_only_file_is_used(tmp_path, monkeypatch):
    directory = tmp_path / "prebuilt"
    directory.mkdir()
    path = directory / "mixed.fa"
    shutil.copyfile(DATA / "fasta_mixed.fa", path)
    assert count_records(path) == 3  # builds mixed.fa.fai beside it
    monkeypatch.setattr(fasta_index_module, "_can_write", lambda directory, files: False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert count_records(path) == 3
    assert not (tmp_path / "cache").exists()


def test_unwritable_cache_falls_back_to_a_temporary_directory(read_only_dir, tmp_path,
                                                              monkeypatch):
    blocker = write(tmp_path / "not_a_directory", b"")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    fasta_index_module._private_tempdir.cache_clear()
    try:
        assert count_records(read_only_dir / "mixed.fa") == 3
        (private,) = (tmp_path / "tmp").iterdir()
        assert private.name.startswith("cmx-fai-")
        assert [index.suffix for index in private.iterdir()] == [".fai"]
    finally:
        fasta_index_module._private_tempdir.cache_clear()


# --------------------------------------------------------------------- user errors


def test_protein_record_names_record_letter_and_position(data_copy):
    path = data_copy("fasta_protein.fa")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    message = check_user_error(caught.value, path, "prot1", "'I'", "position 6")
    assert "DNA only" in message


@pytest.mark.parametrize(
    ("sequence", "letter", "position"),
    [
        (b"ACGTX", "X", 5),
        (b"ACGT*", "*", 5),
        (b"AC-GT", "-", 3),
        (b"ACGT\nAC5T", "5", 7),
        (b"EFILPQ", "E", 1),
        (b"acgtacgtacgtAC.T", ".", 15),
    ],
)
def test_invalid_letters(tmp_path, sequence, letter, position):
    path = write(tmp_path / "bad.fa", b">good\nACGT\n>bad_record\n" + sequence + b"\n")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "bad_record", repr(letter), f"position {position}")


def test_streaming_yields_records_in_file_order_before_a_bad_one(data_copy):
    records = iter_records(data_copy("fasta_protein.fa"))
    assert iter(records) is records  # a generator, not a list
    assert next(records).name == "dna1"
    with pytest.raises(CmxError, match="prot1"):
        next(records)


def test_zero_length_record(data_copy):
    path = data_copy("fasta_zero_length.fa")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "'empty'", "no sequence")


def test_duplicate_record_names(data_copy):
    path = data_copy("fasta_duplicate.fa")
    with pytest.raises(CmxError) as caught:
        count_records(path)
    check_user_error(caught.value, path, "'chr1'", "more than once")


def test_inconsistent_line_lengths(data_copy):
    path = data_copy("fasta_inconsistent_lines.fa")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "'ragged'", "line 6", "inconsistent")


def test_last_line_longer_than_the_others(data_copy):
    # pyfaidx indexes this record, then reads into the next header; cmx notices.
    path = data_copy("fasta_long_last_line.fa")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "'long_last'", "inconsistent")


def test_plain_gzip_is_refused_with_a_bgzip_hint(data_copy, tmp_path):
    plain = DATA.joinpath("fasta_mixed.fa").read_bytes()
    path = write(tmp_path / "mixed.fa.gz", gzip.compress(plain))
    with pytest.raises(CmxError) as caught:
        count_records(path)
    message = check_user_error(caught.value, path, "plain gzip")
    assert "bgzip" in message.split("Hint:")[1]


def test_bgzf_file_without_a_gz_suffix(data_copy, tmp_path):
    path = bgzip(data_copy("fasta_mixed.fa"), tmp_path / "mixed.fa.bgzf")
    with pytest.raises(CmxError) as caught:
        count_records(path)
    check_user_error(caught.value, path, "mixed.fa.gz")


def test_gz_suffix_on_an_uncompressed_file(data_copy, tmp_path):
    path = tmp_path / "mixed.fa.gz"
    shutil.copyfile(DATA / "fasta_mixed.fa", path)
    with pytest.raises(CmxError) as caught:
        count_records(path)
    check_user_error(caught.value, path, "not compressed")


def test_missing_file(tmp_path):
    path = tmp_path / "absent.fa"
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "no such file")


def test_directory_instead_of_a_file(tmp_path):
    with pytest.raises(CmxError) as caught:
        count_records(tmp_path)
    check_user_error(caught.value, tmp_path, "directory")


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "empty"),
        (b"\n\n  \n", "no FASTA records"),
        (b"; only a comment\n", "no FASTA records"),
    ],
    ids=["zero-bytes", "blank-lines", "comment-only"],
)
def test_empty_files(tmp_path, data, problem):
    path = write(tmp_path / "empty.fa", data)
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, problem)


def test_empty_bgzf_file(tmp_path):
    path = bgzip(write(tmp_path / "empty.fa", b""), tmp_path / "empty.fa.gz")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "no FASTA records")


@pytest.mark.parametrize(
    ("name", "kind"),
    [("fasta_not_fasta.vcf", "VCF"), ("fasta_reads.fastq", "FASTQ")],
)
def test_other_formats_are_named(data_copy, name, kind):
    path = data_copy(name)
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "not FASTA", kind)


@pytest.mark.parametrize(
    ("name", "content", "kind"),
    [
        ("reads.bam", b"BAM\x01\x00\x00\x00\x00", "BAM"),
        ("calls.vcf.gz", b"##fileformat=VCFv4.2\n", "VCF"),
    ],
)
def test_compressed_files_of_other_formats_are_named(tmp_path, name, content, kind):
    source = write(tmp_path / "content", content)
    path = bgzip(source, tmp_path / name)
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "not FASTA", kind)


def test_plain_gzip_of_another_format_says_what_it_is(tmp_path):
    path = write(tmp_path / "calls.vcf.gz", gzip.compress(b"##fileformat=VCFv4.2\n"))
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "not FASTA", "VCF")


def test_truncated_bgzf_file(data_copy, tmp_path):
    whole = bgzip(data_copy("fasta_mixed.fa"), tmp_path / "whole.fa.gz").read_bytes()
    path = write(tmp_path / "truncated.fa.gz", whole[:-28])  # drop the BGZF EOF block
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "truncated")


def test_random_bytes(tmp_path):
    noise = np.random.default_rng(7).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path = write(tmp_path / "noise.fa", b"\x00" + noise)
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "binary")


def test_binary_after_a_header(tmp_path):
    path = write(tmp_path / "header_then_binary.fa", b">x\nACGT\n\xff\xfe\x00\x01\n")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "not text")


def test_header_without_a_name(tmp_path):
    path = write(tmp_path / "nameless.fa", b">a\nACGT\n>\nACGT\n")
    with pytest.raises(CmxError) as caught:
        list(iter_records(path))
    check_user_error(caught.value, path, "line 3", "no name")


def test_blank_lines_pyfaidx_cannot_index_are_a_one_line_error(tmp_path):
    path = tmp_path / "blank_tail.fa"
    path.write_text(">a\nACGTACGTAA\n>b\nACGTTTGGCA\n\n\n")
    with pytest.raises(CmxError) as error:
        list(iter_records(path))
    check_user_error(error.value, "blank_tail.fa", "'b'", "blank lines")
