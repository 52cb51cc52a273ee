"""Python code to run inside a sandbox that measures the CPU it is given: two forked children
each spin for 3 s and the parent prints `CPU_SHARE <cores>` (their CPU time over the wall time
they took). Unlimited on two free cores that is about 2.0; a share of one core, about 1.0.
Shared by the bare-sandbox test (tests/test_sandbox.py) and the one through the real runner
(tests/test_attacks_allowlist.py)."""

BUSY_CHILDREN = """
import os, time
kids = []
for _ in range(2):
    pid = os.fork()
    if pid == 0:
        end = time.monotonic() + 3
        while time.monotonic() < end:
            pass
        os._exit(0)
    kids.append(pid)
t = time.monotonic()
for k in kids:
    os.waitpid(k, 0)
print("CPU_SHARE %.3f" % (os.times().children_user / (time.monotonic() - t)), flush=True)
"""


def cpu_share(output: str) -> float:
    """The CPU_SHARE figure BUSY_CHILDREN printed in `output`."""
    return float(next(ln for ln in output.splitlines() if ln.startswith("CPU_SHARE")).split()[1])
