"""Concrete bilevel problems, one sub-package per domain."""
