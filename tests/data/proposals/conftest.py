"""Real photographs (scikit-image's bundled samples) written as small files for proposal tests."""
import os

import cv2
import numpy as np
import pytest

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
          "camera", "coins", "clock", "retina")


def write_photos(root: str, names=PHOTOS, side: int = 160) -> list:
    """Write each photo with its longer side resized to ``side`` px; returns relative paths."""
    import skimage.data

    os.makedirs(root, exist_ok=True)
    rels = []
    for i, name in enumerate(names):
        img = np.asarray(getattr(skimage.data, name)())
        img = img[:, :, ::-1] if img.ndim == 3 else img  # RGB -> BGR for cv2.imwrite
        s = side / max(img.shape[:2])
        img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                         interpolation=cv2.INTER_AREA)
        rel = f"{'a' if i % 2 else 'b'}/{name}.{'png' if i % 3 == 0 else 'jpg'}"
        os.makedirs(os.path.join(root, os.path.dirname(rel)), exist_ok=True)
        assert cv2.imwrite(os.path.join(root, rel), img)
        rels.append(rel)
    return rels


@pytest.fixture(scope="session")
def photo_writer():
    """The :func:`write_photos` helper, for tests that need their own copies."""
    return write_photos


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    write_photos(root)
    return root
