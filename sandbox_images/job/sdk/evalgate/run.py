"""Entry point of the job container: runs the suite's entrypoint as __main__.

Exit codes the worker reads: 0 done, 3 the model query budget ran out, anything else a crash.
"""

from __future__ import annotations

import os
import runpy
import sys

from evalgate_inference.contract import SUITE_DIR, BudgetExceeded, Env, Exit


def main() -> int:
    suite = os.environ.get(Env.SUITE_DIR, SUITE_DIR)
    entry = os.path.join(suite, os.environ[Env.ENTRYPOINT])
    sys.path.insert(0, os.path.dirname(entry))
    sys.argv = [entry]
    try:
        runpy.run_path(entry, run_name="__main__")
    except BudgetExceeded:
        return Exit.BUDGET
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
