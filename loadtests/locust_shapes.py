"""A step load shape for loadtests/locustfile.py: users rise in steps, each held for a while.

    users: STEP, 2*STEP, ... up to MAX, each for ZOOSERVE_STEP_SECONDS; then the run ends.

Settings from the environment (`python -m loadtests.loadtest --shape step` sets them):
ZOOSERVE_STEP_USERS (default 4), ZOOSERVE_STEP_SECONDS (10), ZOOSERVE_STEP_MAX (32).
Locust's --run-time still bounds the whole run.
"""

from __future__ import annotations

import math
import os

from locust import LoadTestShape


class StepLoadShape(LoadTestShape):
    step_users = int(os.environ.get("ZOOSERVE_STEP_USERS", "4"))
    step_seconds = float(os.environ.get("ZOOSERVE_STEP_SECONDS", "10"))
    max_users = int(os.environ.get("ZOOSERVE_STEP_MAX", "32"))

    def tick(self) -> tuple[int, float] | None:
        steps = math.ceil(self.max_users / self.step_users)
        elapsed = self.get_run_time()
        step = int(elapsed // self.step_seconds)
        if step >= steps:
            return None
        users = min((step + 1) * self.step_users, self.max_users)
        return users, float(users)  # spawn the whole step at once
