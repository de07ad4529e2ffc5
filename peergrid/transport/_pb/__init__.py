"""Generated gRPC code: do not edit; run python protos/generate.py."""
