"""Shards of a VCF for scoring in parallel: regions that hold each record exactly once.

`cmx predict --region` takes the records whose POS lies in a region, not all that overlap
it, so regions that tile each contig hold every record once; scored one per job and joined
in this order (``bcftools concat``), they give what one unsharded run gives. The workflow in
``examples/workflow/Snakefile`` shards with :func:`shard_regions`.

Decisions:

* The contigs are those the VCF's index lists, in its order (a .tbi lists the contigs with
  records, in file order), so no job is spent on a contig without records.
* With a chunk size, a contig's length comes from the VCF header's ``##contig`` line, else
  from the reference FASTA. The last chunk of a contig is open-ended (``chr:start-``), so a
  record past the length the header gives still lands in one shard, where `cmx predict`
  reports it, instead of in none.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from cmx_cli.errors import CmxError
from cmx_cli.io.reference import ReferenceGenome
from cmx_cli.io.vcf_reader import open_variants

PathLike = Union[str, Path]


def shard_regions(vcf: PathLike, chunk_size: int = 0, reference: Optional[PathLike] = None,
                  contig_map: Optional[PathLike] = None) -> list[str]:
    """Regions (``--region`` texts) that together hold every record of ``vcf`` once.

    Args:
        vcf: An indexed VCF or BCF file.
        chunk_size: Bases per region; 0 gives one region per contig.
        reference: The reference FASTA, for the lengths of contigs whose ``##contig`` line
            has none (needed only with a chunk size).
        contig_map: The ``--contig-map`` file that maps VCF contig names to FASTA names.

    Returns:
        ``contig`` or ``contig:start-end`` texts (1-based, inclusive), in file order.

    Raises:
        CmxError: The VCF has no index; a contig's length is unknown when chunking.
    """
    if chunk_size < 0:
        raise ValueError(f"chunk_size must be 0 or positive, not {chunk_size}")
    with open_variants(vcf) as variants:
        contigs = variants.indexed_contigs("sharding")
        declared = {name: variants.header.contigs[name].length
                    for name in variants.header.contigs}
    if not chunk_size:
        return contigs
    lengths = {name: declared.get(name) for name in contigs}
    unknown = [name for name, length in lengths.items() if not length]
    if unknown:
        if reference is None:
            raise CmxError(f"{vcf}: no length for contig '{unknown[0]}' in the header",
                           "give the reference FASTA, or shard by contig (chunk size 0).")
        with ReferenceGenome(reference, contig_map) as genome:
            lengths.update({name: genome.length(name) for name in unknown})
    regions = []
    for name in contigs:
        starts = range(1, max(lengths[name], 1) + 1, chunk_size)
        for start in starts:
            last = start == starts[-1]
            regions.append(f"{name}:{start}-" if last else f"{name}:{start}-{start + chunk_size - 1}")
    return regions
