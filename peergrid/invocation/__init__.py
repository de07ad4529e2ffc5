"""Invocation: route an operation to its partition's owner, locally or over a peer pipe."""
