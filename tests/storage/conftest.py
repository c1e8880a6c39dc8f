"""Fixtures for the object-storage tests: an embedded S3 server with a second bucket and a key scoped to one prefix."""

from __future__ import annotations

import pytest

SCOPED_PREFIX = "second/team-a"


@pytest.fixture(scope="module")
def scoped_s3(tmp_path_factory):
    """SeaweedFS with buckets ``unihema`` and ``second``.

    ``scoped_config(SCOPED_PREFIX)`` may touch only second/team-a/.
    """
    from unihema.storage import EmbeddedS3

    server = EmbeddedS3(tmp_path_factory.mktemp("scoped-s3"), scoped_prefixes=(SCOPED_PREFIX,))
    server.start()
    server.create_bucket("unihema")
    server.create_bucket("second")
    server.client().put_object(Bucket="second", Key="team-b/other-team.txt", Body=b"not yours")
    yield server
    server.stop()
