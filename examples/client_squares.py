"""The Python client: one job that writes a file in its working directory, then a map.

Run with a coordinator and an agent up: ``COMPOUND_COORDINATOR=http://127.0.0.1:8000
python examples/client_squares.py OUT_DIR`` (``COMPOUND_TOKEN`` when it needs one).
"""

import sys
import tempfile
from pathlib import Path

from compound import Client

JOB = """\
import sys
n = int(sys.argv[1])
open("square.txt", "w").write(f"{n * n}\\n")
print(n * n)
"""

out = Path(sys.argv[1] if len(sys.argv) > 1 else "squares")
with tempfile.TemporaryDirectory() as where:
    script = Path(where) / "square.py"
    script.write_text(JOB)
    with Client() as client:  # the coordinator, token and CA file from the environment
        job = client.submit(script, args=["7"], timeout=120)
        for record in job.stream():
            print(f"[{record.stream}] {record.text}", end="")
        result = job.wait()
        print("status", result.status, "exit", result.exit_code)
        print("files", [p.name for p in job.download_artifacts(out)])
        for item in client.map(script, [["2"], ["3"]], concurrency=2, timeout=120):
            print("map", item.stdout.strip() if not isinstance(item, Exception) else item)
