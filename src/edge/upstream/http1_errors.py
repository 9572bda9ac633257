"""What the HTTP/1.1 client raises besides plain `OSError` and `TimeoutError`.

These live apart from `http1.py` because that module is compiled with mypyc
(scripts/compiled-modules), and mypyc cannot compile a class that inherits
from a built-in exception other than `Exception`.
"""


class ConnectFailed(OSError):
    """The connection could not be made: nothing reached the upstream."""


class StaleConnection(OSError):
    """A kept-alive connection ended before any byte of an answer: the upstream closed it while idle."""


class ProtocolFailure(OSError):
    """The upstream's answer is not HTTP/1.1 this client can read."""
