"""Real photographs (scikit-image's bundled samples) written as small files for proposal tests
(the writer lives in ``tests/_data.py``)."""
import pytest

from _data import write_photos


@pytest.fixture(scope="session")
def photo_writer():
    """The ``_data.write_photos`` helper, for tests that need their own copies."""
    return write_photos


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("photos"))
    write_photos(root)
    return root
