"""A first Compound job: prints where it runs, streams a few lines, exits 0."""

import platform
import sys
import time

name = sys.argv[1] if len(sys.argv) > 1 else "world"
print(f"Hello, {name}! Running Python {platform.python_version()} on {platform.node()}")
for step in range(1, 4):
    print(f"step {step}/3", flush=True)
    time.sleep(0.3)
print("done: this line came back through the coordinator", file=sys.stderr)
