"""Two members in two processes: writes through one are read through the other.

    python examples/two_processes.py

The parent starts a member, then runs a second one as a child process
(``peergrid member``) that joins it; each writes, and each reads the other's
entries. In production each service process embeds its ``peergrid.Grid`` the
same way, with the others' addresses as seeds.
"""

import json
import subprocess
import sys

import peergrid

with peergrid.Grid(cluster="two-processes") as parent:
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peergrid",
            "member",
            "--cluster",
            "two-processes",
            "--members",
            parent.address,
            "--commands",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    print("child:", child.stdout.readline().strip())

    def ask(**command: object) -> object:
        child.stdin.write(json.dumps(command) + "\n")  # type: ignore[union-attr]
        child.stdin.flush()  # type: ignore[union-attr]
        return json.loads(child.stdout.readline())["result"]  # type: ignore[union-attr]

    ask(op="safe", timeout=10)
    colors = parent.get_map("colors")
    colors.put_all({"sky": "blue", "grass": "green"})
    ask(op="put", map="colors", key="sun", value="yellow")

    print("child reads the parent's writes:", ask(op="get_all", map="colors", keys=["sky", "grass"]))
    print("parent reads the child's write:", colors.get("sun"))
    print("members:", [m.address for m in parent.members()])

    child.stdin.close()  # end of commands: the child leaves gracefully
    child.wait(timeout=30)
