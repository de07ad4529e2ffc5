"""Transport: the gRPC server and the peer clients, the only package that imports grpc.

Generated code is fenced in ``_pb`` (regenerate with ``python protos/generate.py``);
``convert`` turns its messages into domain objects and back, so no other layer
sees a protobuf message.
"""

import os

# grpc's core logs every peer disconnect at INFO on stderr: in an application that embeds
# a member, a member leaving would print there. Quiet unless the application chose a level.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

from peergrid.transport.client import FrameStream, PeerClient, Peers
from peergrid.transport.server import Handlers, Server

__all__ = ["FrameStream", "Handlers", "PeerClient", "Peers", "Server"]
