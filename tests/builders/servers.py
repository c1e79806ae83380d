"""Settings the tests start their servers with that the tests themselves need to know."""

from __future__ import annotations

ADMIN_TOKEN = "test-admin-token-0f3a"  # CVAE_ADMIN_TOKEN of the servers with admin on
AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BODY_TIMEOUT_S = 2.0  # short, so the slow-body test does not wait the default 30 s
