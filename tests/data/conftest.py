"""Fixtures for pipeline tests: a small synthetic dataset on the embedded S3, and local Ray."""

import pytest


@pytest.fixture(scope="session")
def synthetic_uri(embedded_s3):
    """48 synthetic records (96 px) in s3://unihema/pipeline-test, generated once per session."""
    from unihema.data.synthetic import generate_dataset

    uri = "s3://unihema/pipeline-test"
    generate_dataset(48, uri, embedded_s3.storage_config(), seed=3, image_size=96, workers=1)
    return uri


@pytest.fixture(scope="session")
def local_ray():
    """A local Ray instance on 127.0.0.1 for Ray Data (started once, stopped at the end)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield ray
    import gc

    gc.collect()  # abandoned stream iterators close while Ray is still up
    ray.shutdown()
