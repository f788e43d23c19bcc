"""The releases readers never see fail (#12) on Ghost 6 (6.65 on node 22 from the npm
registry), the Ghost sites run today: the same scenarios as test_e2e_golive.py, in a guest of
its own where each site's Ghost 6 is installed by Ghost-CLI (`ghost install`, systemd,
sqlite3), with Ghost-CLI's own unit, layout and users."""

# ruff: noqa: F401, F811 - the fixtures and the test are imported to run here with Ghost 6
from __future__ import annotations

import pytest

from tests.e2e.agent_host import lab, make_site
from tests.e2e.test_e2e_golive import (
    test_e2e_releases_go_live_by_activation_and_broken_ones_never_do,
    test_e2e_routes_and_redirects_from_the_repository_reach_ghost,
)

pytestmark = pytest.mark.e2e

GHOST_MAJOR = "6"  # read by the lab fixture
GHOST_INSTALL = "ghost-cli"
