"""Cluster membership: the member list, joining, heartbeats, failure detection, discovery."""
