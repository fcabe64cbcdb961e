"""Entry point of the job container: runs the suite's entrypoint as __main__, and only once the model
sidecar has answered, so a sidecar that never served the model means the partner's code never ran.

Exit codes the worker reads (evalgate_inference.contract.Exit): 0 done, 3 the model query budget ran
out, 4 no model (the partner's code did not start), 5 out of memory, anything else a crash.
"""

from __future__ import annotations

import os
import runpy
import sys

from evalgate_inference.contract import SUITE_DIR, BudgetExceeded, Env, Exit, ModelError

from . import model_info_cached


def main() -> int:
    try:
        model_info_cached()  # waits for the sidecar's socket, then asks it for the model's signature
    except ModelError:
        return Exit.NO_MODEL
    suite = os.environ.get(Env.SUITE_DIR, SUITE_DIR)
    entry = os.path.join(suite, os.environ[Env.ENTRYPOINT])
    sys.path.insert(0, os.path.dirname(entry))
    sys.argv = [entry]
    try:
        runpy.run_path(entry, run_name="__main__")
    except BudgetExceeded:
        return Exit.BUDGET
    except MemoryError:  # at the job's memory limit: an out-of-memory ending, whichever runtime said it
        return Exit.MEMORY
    return Exit.OK


if __name__ == "__main__":
    sys.exit(main())
