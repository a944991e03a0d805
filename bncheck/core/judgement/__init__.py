"""Judging what the passes measured: findings and checks, per-layer divergence, discrepancies
against the reference, the noise floor and tolerance, the input-shift test, convergence, and the
verdict with its recommendation.

May import: every room below it (``network``, ``inputs``, ``distributed``, ``stats``,
``passes``); never the orchestrators at ``core``'s top (``compare``, ``inspection``, ``results``).
"""
