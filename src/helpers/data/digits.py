"""Reader of scikit-learn's bundled 8 x 8 digits (1,797 images, fully offline), split 70 / 15 / 15."""

from __future__ import annotations

import numpy as np

from helpers.data.splits import Split, hwc_to_tensor, split_pool


def load_digits(*, root, size, seed, download, options) -> dict[str, Split]:
    from sklearn.datasets import load_digits  # lazy: scikit-learn (with scipy) costs a second to import

    bunch = load_digits()
    # Pixel values are counts 0..16 (4 x 4 blocks of a 32 x 32 bitmap); scale to the uint8 range.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    labels = bunch.target.astype(np.int64)
    classes = [str(c) for c in bunch.target_names]
    return split_pool(
        images=hwc_to_tensor(images),
        labels=labels,
        classes=classes,
        fractions={"train": 0.70, "val": 0.15, "test": 0.15},
        size=size,
        seed=seed,
        options=options,
    )
