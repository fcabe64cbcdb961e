"""Failpoints: named places where a test may make a real process pause or die, to open the window
a fault-injection test needs (tests/reliability). Off unless `EVALGATE_FAILPOINTS` is set in the
process's environment, as `name=action[,name=action]`, where action is `sleep:SECONDS` or `exit`
(the process ends at once with status 137, as after kill -9: no handler, no cleanup).

    gate   inside the release transaction, after the gate has judged and signed, before the commit
"""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger(__name__)
VAR = "EVALGATE_FAILPOINTS"


def point(name: str) -> None:
    spec = os.environ.get(VAR)
    if not spec:
        return
    for item in spec.split(","):
        key, _, action = item.strip().partition("=")
        if key != name:
            continue
        log.warning("failpoint %s: %s", name, action)
        if action == "exit":
            os._exit(137)
        if action.startswith("sleep:"):
            time.sleep(float(action.removeprefix("sleep:")))
