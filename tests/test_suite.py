"""The test suite's own set-up: what scripts/test.sh relies on to run its tiers on 2 workers."""

import pytest


@pytest.mark.xdist_group("suite")
def test_tests_of_one_xdist_group_run_on_one_worker(request):
    """`--dist loadgroup` puts a group's tests on one worker (the cluster tests share /tmp/ray, the
    two-process runs are made once) only when pytest-xdist can tag their ids; pytest 9.2 broke that."""
    if not getattr(request.config.option, "loadgroup", False):  # set on xdist's workers
        pytest.skip("not run on pytest-xdist workers with --dist loadgroup")
    assert request.node.nodeid.endswith("@suite"), f"{request.node.nodeid}: xdist_group was ignored"
