"""Packaging for cmx: ChordMixer networks for DNA, from the command line."""
import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (HERE / "cmx_cli" / "__init__.py").read_text(), re.M
).group(1)

setup(
    # "cmx" on PyPI is an unrelated project; the command is still `cmx`.
    name="cmx-chordmixer",
    version=VERSION,
    description="Train and apply ChordMixer networks to DNA sequences of any length.",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(include=["cmx_cli", "cmx_cli.*", "models", "models.*"]),
    package_data={"cmx_cli": ["demo_data/*"]},
    install_requires=[
        "torch>=2.1",
        "click>=8.1",
        "pysam>=0.22",
        "pyfaidx>=0.8.1",
        # pyfaidx reads bgzip-compressed FASTA through Bio.bgzf.
        "biopython>=1.80",
        "rich>=13.0",
        "scikit-learn>=1.3",
        "numpy>=1.24",
        # cmx report and cmx explain --plot draw their figures with it.
        "matplotlib>=3.7",
    ],
    extras_require={
        # Snakemake runs examples/workflow (scoring a VCF in shards); it needs Python 3.11.
        "workflow": ["snakemake>=8.0; python_version >= '3.11'"],
        "test": ["pytest>=7.4", "hypothesis>=6.80", "snakemake>=8.0; python_version >= '3.11'"],
    },
    entry_points={"console_scripts": ["cmx = cmx_cli.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Bio-Informatics",
        "Environment :: Console",
    ],
)
