"""A Jepsen-style fault-test harness for peergrid: worker processes in network namespaces run
client operations and record histories, a nemesis injects faults, and pure checkers judge the
histories (see README.md in this folder)."""
