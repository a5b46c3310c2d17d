import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from unclip_pipelines import UnCLIPImageVariationPipeline, UnCLIPPipeline  # noqa: E402
from unclip_pipelines.tiny import tiny_unclip_components  # noqa: E402

diffusers_logging.set_verbosity_error()
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture
def single_thread():
    """
    Tiny models on a shared 2-core machine run several times faster on one thread (a second intra-op thread only adds
    synchronisation). Use with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture(scope="session")
def tiny_components():
    return tiny_unclip_components()


@pytest.fixture(scope="session")
def tiny_variation_components():
    return tiny_unclip_components(image_variation=True)


@pytest.fixture
def pipe(tiny_components):
    pipe = UnCLIPPipeline(**tiny_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture
def variation_pipe(tiny_variation_components):
    pipe = UnCLIPImageVariationPipeline(**tiny_variation_components)
    pipe.set_progress_bar_config(disable=True)
    return pipe
