"""The one error tree of peergrid.

Every error peergrid raises is a :class:`PeerGridError`; foreign errors (grpc,
msgpack, OS) are translated at the border that meets them and raised ``from``
the original. An error's ``retryable`` attribute says whether the same call may
succeed if simply tried again::

    PeerGridError
    ├── ConfigError (+ TypeError)            bad or unknown configuration
    │   └── TLSConfigError (+ TLSError)      TLS files unreadable, swapped, or key not the cert's
    ├── ArgumentError (+ TypeError)          bad arguments to a call
    │   ├── KeyTypeError                     a key that is not str, bytes or int
    │   └── SerializationError               a value the serializer cannot carry
    ├── LimitExceededError (+ ValueError)    a key, value or batch over a limit
    │   └── ResultTooLargeError              a read whose answer cannot fit the transport's messages
    ├── BindError (+ OSError)                the bind address is in use, not local, or invalid
    ├── GridClosedError                      the grid was shut down, or created before a fork
    ├── ForkError                            no member can start in a child forked from a running one
    ├── ClusterError
    │   ├── ClusterNameMismatchError         a peer belongs to another cluster
    │   ├── JoinError                        could not join the cluster
    │   ├── PeerUnavailableError             a peer could not be reached
    │   │   └── TLSError                     a peer failed the TLS handshake (or our TLS files)
    │   └── QuorumError                      fewer members than min_cluster_size
    ├── OperationTimeoutError (+ TimeoutError)   no answer within the deadline
    │   └── IndeterminateWriteError          a write whose outcome is unknown
    ├── PartitionLostError                   every copy of a partition was lost
    ├── CapacityError                        a bounded map is full
    ├── StoreError                           a map's store (its database) failed
    ├── LockError                            an unlock by a non-holder; a lock not acquired in time
    ├── ProcessorError                       an entry processor is unknown on the owner, or raised
    └── RemoteError                          a peer failed to execute a request
"""

from __future__ import annotations


class PeerGridError(Exception):
    """Root of every error peergrid raises."""

    #: True when the same call may succeed if tried again unchanged.
    retryable: bool = False


class ConfigError(PeerGridError, TypeError):
    """A configuration value is missing, unknown, or out of range."""


class ArgumentError(PeerGridError, TypeError):
    """A call received an argument it does not accept."""


class KeyTypeError(ArgumentError):
    """A key is not ``str``, ``bytes`` or ``int``."""


class SerializationError(ArgumentError):
    """A value cannot be serialized (or a stored value cannot be decoded)."""


class LimitExceededError(PeerGridError, ValueError):
    """A key, value or batch is larger than the configured limit."""


class ResultTooLargeError(LimitExceededError):
    """A read cannot complete: one indivisible part of its answer (the keys of one partition)
    is larger than ``limits.max_message_bytes``. Nothing was written.

    Bulk answers are split into messages under that limit, one entry at the least, so only an
    enormous partition gets here. ``size`` is the part's size in bytes and ``partition`` the
    partition (-1 when not known); the message names both and the limit.
    """

    def __init__(self, message: str, size: int = 0, partition: int = -1) -> None:
        super().__init__(message)
        self.size = size
        self.partition = partition


class BindError(PeerGridError, OSError):
    """This member cannot serve on its ``bind`` address: the port is in use, the host is not
    an address of this machine, or the host or port is not valid. The message says which.

    An ``OSError`` too, so code written for the old raw ``OSError`` still catches it.
    """

    def __init__(self, message: str, address: str = "") -> None:
        super().__init__(message)
        self.address = address

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class GridClosedError(PeerGridError):
    """The grid has been shut down (or was created in the parent of a fork); create a new
    ``Grid`` to continue."""


class ForkError(PeerGridError):
    """A member cannot start in this process: it was forked from a process whose member was
    running, and grpc (which members use) does not survive fork. Start grids after fork, in
    each worker; see ``docs/fork.md``."""


class ClusterError(PeerGridError):
    """A problem with cluster membership."""


class ClusterNameMismatchError(ClusterError):
    """A peer belongs to a cluster with another name."""


class JoinError(ClusterError):
    """This member could not join the cluster."""


class PeerUnavailableError(ClusterError):
    """A peer could not be reached (down, restarting, or on the other side of a partition)."""

    retryable = True

    def __init__(self, message: str, address: str = "", refused: bool = False) -> None:
        super().__init__(message)
        self.address = address
        #: The peer's address refused the connection, or reset it: nothing serves there. (A
        #: process that is only slow, starved of CPU or paused, still has its connections
        #: accepted by its kernel: it times out instead.)
        self.refused = refused


class TLSError(PeerUnavailableError):
    """The TLS handshake with a peer failed: its certificate is not of our CA, does not name
    the address dialled (or ``tls.server_name``), or one side does not use TLS."""

    retryable = False


class TLSConfigError(ConfigError, TLSError):
    """This member's own TLS files cannot be used: unreadable, not PEM of the expected kind
    (a key where the certificate belongs: swapped files), a private key that is not the
    certificate's, or a CA file holding a certificate that is no CA.

    Both a ``ConfigError`` and a ``TLSError``; the message names the field or file and the fix.
    """


class QuorumError(ClusterError):
    """Writes are refused: this member sees fewer members than ``min_cluster_size``."""

    retryable = True


class OperationTimeoutError(PeerGridError, TimeoutError):
    """An operation did not complete within its deadline."""

    retryable = True


class IndeterminateWriteError(OperationTimeoutError):
    """A write was sent but its outcome is unknown (the owner failed mid-call).

    The write may or may not have been applied; read the key to find out.
    """

    retryable = False


class PartitionLostError(PeerGridError):
    """Every copy of a partition was lost; its data cannot be served.

    Raised instead of serving the partition as empty. ``partition`` names it.
    """

    def __init__(self, message: str, partition: int) -> None:
        super().__init__(message)
        self.partition = partition


class CapacityError(PeerGridError):
    """A map bounded without an eviction policy is full."""


class StoreError(PeerGridError):
    """A map store (the database behind a map) failed.

    ``retryable`` is set per failure: True when the same call may pass later
    (the database unreachable, busy or restarting), False when it will not
    (a missing privilege, a table of another shape, a closed store).
    ``store`` names the store, with any password left out.
    """

    def __init__(self, message: str, *, retryable: bool = False, store: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.store = store


class RemoteError(PeerGridError):
    """A peer failed to execute a request (a bug or an unexpected condition there)."""


class LockError(PeerGridError):
    """A lock operation failed: an unlock by a thread or task that does not hold the lock
    (never held, held by another, or its lease ended), or ``lock(timeout=...)`` ran out of time.

    The message says which. See ``docs/locks.md``.
    """


class ProcessorError(PeerGridError):
    """An entry processor could not run on the key's owner: no processor of that name is
    registered there, or it raised, or what it returned or stored cannot be serialized.

    The entry is unchanged. ``processor`` names the processor; the message names the
    owner-side exception (its type and text; the owner logs the traceback at debug level).
    """

    def __init__(self, message: str, processor: str = "") -> None:
        super().__init__(message)
        self.processor = processor
