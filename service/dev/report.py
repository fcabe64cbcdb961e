"""What `evalgate dev run` shows: everything a real job hides, then the gate's verdict and its cost."""

from __future__ import annotations

import json

from service.dev.run import Assets, DevExit, DevResult

RULE = "-" * 72


def lines(result: DevResult, assets: Assets) -> list[str]:
    out = [*assets.notes]
    o = result.outcome
    if o is not None:
        out += [
            RULE,
            "the job's output (stdout and stderr; a real job never shows it):",
            o.job_log.rstrip() or "(none)",
        ]
        out += [
            RULE,
            f"exit code {o.exit_code}" + (", out of memory" if o.oom else "") + (", timed out" if o.timed_out else ""),
        ]
        out.append("the sidecar's usage: " + json.dumps(o.usage, sort_keys=True))
    out.append(RULE)
    if result.exit == DevExit.FAILED:
        out.append(f"this job would end as {result.error_class}: a real job shows its partner that and nothing more")
    elif result.exit == DevExit.REJECTED:
        out.append(f"this result would be rejected: {result.rejected}")
        out.append("(a real job shows its partner output_rejected and nothing more)")
    else:
        assert result.release is not None
        out.append("this result would be released (values here are from the twin, not the real data):")
        for name, value in sorted(result.release.metrics.items()):
            out.append(f"  {name} = {value}")
        for s in result.release.suppressed:
            out.append(f"  {s['metric']} withheld: {s['reason']}")
    noised = ", ".join(result.noised) or "none"
    out.append(
        f"the real job would cost ε {result.epsilon_total} ({result.epsilon_per_metric} per noised metric: {noised}) "
        f"and carry at most {result.bits:.1f} bits, charged whatever it reports"
    )
    return out
