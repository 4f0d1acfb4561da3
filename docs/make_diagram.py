"""Draws docs/images/adalink.png: where AdaLink sits in a frozen model.

.venv/bin/python docs/make_diagram.py
"""

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyBboxPatch  # noqa: E402

FROZEN = "#d9dee6"
TRAINED = "#f4b942"
TEXT = "#1b1f24"


def box(ax, x, y, w, h, label, color, size=10):
    ax.add_patch(
        FancyBboxPatch(
            (x, y),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            fc=color,
            ec="#6b7280",
            lw=1.0,
        )
    )
    ax.text(
        x + w / 2, y + h / 2, label, ha="center", va="center", fontsize=size
    )


def arrow(ax, x0, y0, x1, y1):
    ax.annotate(
        "",
        (x1, y1),
        (x0, y0),
        arrowprops=dict(arrowstyle="->", color="#4b5563", lw=1.2),
    )


def main():
    fig, ax = plt.subplots(figsize=(9, 4.6))
    ax.set_xlim(0, 9)
    ax.set_ylim(-0.15, 4.3)
    ax.axis("off")
    # Text path.
    box(ax, 0.2, 3.5, 1.6, 0.6, "token ids", "white")
    box(ax, 0.2, 2.4, 1.6, 0.7, "vocabulary\nlookup  E", FROZEN)
    box(ax, 2.3, 2.3, 2.4, 0.9, "AdaLink (text)\nE + (E W_down) W_up", TRAINED)
    # Image path.
    box(ax, 0.2, 1.0, 1.6, 0.6, "image patches", "white")
    box(ax, 0.2, 0.1, 1.6, 0.6, "vision tower", FROZEN)
    box(ax, 2.3, 0.0, 2.4, 0.9, "AdaLink (image)\nper-modality module", TRAINED)
    # Shared frozen stack.
    box(
        ax,
        5.3,
        0.6,
        1.7,
        2.6,
        "transformer\nblocks x L\n(frozen,\nunchanged)",
        FROZEN,
    )
    box(ax, 7.5, 1.5, 1.3, 0.8, "head /\nLM output", "white")
    arrow(ax, 1.0, 3.5, 1.0, 3.1)
    arrow(ax, 1.8, 2.75, 2.3, 2.75)
    arrow(ax, 1.0, 1.0, 1.0, 0.7)
    arrow(ax, 1.8, 0.4, 2.3, 0.45)
    arrow(ax, 4.7, 2.75, 5.3, 2.4)
    arrow(ax, 4.7, 0.45, 5.3, 1.2)
    arrow(ax, 7.0, 1.9, 7.5, 1.9)
    ax.text(
        3.5,
        3.55,
        "trained: 2 d r numbers per module\n"
        "(W_up starts at 0: the model starts unchanged)",
        ha="center",
        fontsize=8.5,
        color=TEXT,
    )
    ax.text(
        6.15,
        0.2,
        "cost O(N d r), independent of L;\nno extra tokens; foldable into E",
        ha="center",
        fontsize=8.5,
        color=TEXT,
    )
    fig.tight_layout()
    out = os.path.join(os.path.dirname(__file__), "images", "adalink.png")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    fig.savefig(out, dpi=110)
    print("wrote", out)


if __name__ == "__main__":
    main()
