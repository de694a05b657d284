"""Pictures of per-base explanations: a substitution heatmap and a sequence logo (PNG)."""
from __future__ import annotations

import numpy as np
from matplotlib.font_manager import FontProperties
from matplotlib.figure import Figure
from matplotlib.patches import PathPatch
from matplotlib.textpath import TextPath
from matplotlib.transforms import Affine2D

from cmx_cli.alphabet import BASES, decode
from cmx_cli.explain.attribution import BaseEffects
from cmx_cli.explain.masked_profile import information_bits
from cmx_cli.report.plots import png_bytes

#: Colours of A, C, G, T, as most logo tools draw them.
BASE_COLOURS = ("#2ca02c", "#1f77b4", "#ff7f0e", "#d62728")


def effect_heatmap(name: str, effects: BaseEffects, class_names: list[str], method: str) -> bytes:
    """Position × base heatmap of the change in the last class's log-odds (class 1 of a
    binary model); the reference base's cell is 0."""
    positions = len(effects.ref)
    grid = np.zeros((4, positions))
    for column in range(3):
        grid[effects.alt[:, column], np.arange(positions)] = effects.delta[:, column, -1]
    grid[:, effects.ref >= 4] = np.nan
    limit = float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0
    canvas = Figure(figsize=(min(24, max(6, positions / 12)), 2.8))
    ax = canvas.subplots()
    image = ax.imshow(grid, aspect="auto", cmap="RdBu_r", vmin=-limit or -1, vmax=limit or 1,
                      interpolation="nearest",
                      extent=(effects.start + 0.5, effects.start + positions + 0.5, 3.5, -0.5))
    ax.set_yticks(range(4))
    ax.set_yticklabels(list(BASES))
    ax.set_xlabel(f"{name} position (1-based)")
    ax.set_title(f"{method}: change in log-odds of {class_names[-1]} when the base becomes ...")
    canvas.colorbar(image, ax=ax, fraction=0.03)
    if positions <= 120:
        ax.set_xticks(np.arange(effects.start + 1, effects.start + positions + 1),
                      list(decode(effects.ref)), fontsize=6)
    return png_bytes(canvas)


def sequence_logo(name: str, start: int, ref: np.ndarray, profile: np.ndarray) -> bytes:
    """A sequence logo: at each position the four bases stacked, each as tall as its
    probability times the position's information content (bits)."""
    bits = information_bits(profile)
    positions = len(ref)
    canvas = Figure(figsize=(min(24, max(6, positions / 8)), 2.6))
    ax = canvas.subplots()
    font = FontProperties(family="DejaVu Sans", weight="bold")
    glyphs = {base: TextPath((0, 0), base, size=1, prop=font) for base in BASES}
    for offset in range(positions):
        bottom = 0.0
        for base in np.argsort(profile[offset]):
            height = float(profile[offset, base] * bits[offset])
            if height <= 1e-4:
                continue
            glyph = glyphs[BASES[base]]
            box = glyph.get_extents()
            transform = (Affine2D().translate(-box.x0, -box.y0)
                         .scale(0.9 / box.width, height / box.height)
                         .translate(start + offset + 1 - 0.45, bottom))
            ax.add_patch(PathPatch(transform.transform_path(glyph), color=BASE_COLOURS[base],
                                   linewidth=0))
            bottom += height
    ax.set_xlim(start + 0.5, start + positions + 0.5)
    ax.set_ylim(0, 2)
    ax.set_ylabel("bits")
    ax.set_xlabel(f"{name} position (1-based)")
    ax.set_title("P(base) with the position masked, scaled by information content")
    return png_bytes(canvas)
