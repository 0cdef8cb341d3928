import os

import pytest

from tests.reference import reference_harness


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory):
    """The reference subprocess's outputs; one run serves every pytest-xdist worker."""
    if os.environ.get("ONDEVICE_REFERENCE_OUT"):
        # A kept directory: reruns while developing skip the reference's minute of work.
        return reference_harness.reference_outputs(os.environ["ONDEVICE_REFERENCE_OUT"])
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    return reference_harness.reference_outputs(str(base / "od_api_reference"))
