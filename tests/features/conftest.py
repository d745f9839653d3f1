"""Fixtures of the feature tests: real aligned face crops from ../shared."""

from __future__ import annotations

import numpy as np
import pytest

#: The five people of ../shared/data/fixtures/faces/test_images_aligned (one 160-px crop each).
NAMES = ["angelina_jolie", "bradley_cooper", "kate_siegel", "paul_rudd", "shea_whigham"]


@pytest.fixture(scope="module")
def aligned(faces_dir) -> np.ndarray:
    """uint8 (5, 160, 160, 3): one aligned face crop of each person in :data:`NAMES`."""
    from deepmetric.video.frames import read_image

    return np.stack([read_image(faces_dir / "test_images_aligned" / n / "1.png")
                     for n in NAMES])
