"""Score clips, images or folders with a fitted model (same as ``deepmetric predict``).

    python -m experiments.predict outputs/triplet_rf/<run>/model.skops clip.mp4 --frames
"""

from __future__ import annotations

import sys

from deepmetric.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
