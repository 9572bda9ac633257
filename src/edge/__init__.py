"""edge: the one front door of a data center.

HTTP/JSON and gRPC callers pass one pipeline (identity, policy, quota, audit)
before their call is forwarded to a backend. See DESIGN in the README for the shape.
"""

__version__ = "0.1.0"
