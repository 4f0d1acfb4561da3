import keras
import pytest

from tests.fixtures.encoders import BACKBONES


@pytest.fixture(params=sorted(BACKBONES))
def family(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
