"""The neutral model of a network: what the backends describe and core reasons about.

Owns the normalization layer (``NormLayer``), the ``Model`` protocol every backend implements,
the options and formats, the mergeable float64 moments that cross between a backend's taps and
core, and the small arithmetic both sides share (BN folding, numerics, unique names).

May import: nothing in core (only ``bncheck.errors``). Every other room imports this one.
"""
