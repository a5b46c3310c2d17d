import pytest
import torch

from training import train_clip, train_decoder, train_prior, train_superres
from unclip_pipelines.shapes import write_dataset

from .utils import tiny_argv


@pytest.fixture(scope="package", autouse=True)
def one_thread():
    """Tiny models on a shared 2-core machine run several times faster on one thread (no OpenMP stalls)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def data_dir(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("shapes"), num_images=32, size=128, seed=0)


@pytest.fixture(scope="package")
def clip_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    train_clip.main(tiny_argv("clip", data_dir, out))
    return out


@pytest.fixture(scope="package")
def prior_dir(data_dir, clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("prior")
    train_prior.main(tiny_argv("prior", data_dir, out, clip_dir=clip_dir))
    return out


@pytest.fixture(scope="package")
def decoder_dir(data_dir, clip_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("decoder")
    train_decoder.main(tiny_argv("decoder", data_dir, out, clip_dir=clip_dir))
    return out


@pytest.fixture(scope="package")
def superres_dir(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("superres")
    train_superres.main(tiny_argv("superres", data_dir, out, extra="--super_res_last same"))
    return out
