import pytest
from kit.images import jpeg_bytes


@pytest.fixture
def make_jpeg():
    return jpeg_bytes
