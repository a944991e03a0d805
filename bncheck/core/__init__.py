"""Backend-neutral core, in rooms that import one way (docs/design.md, "Layering"):

network -> {inputs, distributed, stats} -> passes -> judgement -> compare, inspection, results

Each room's ``__init__`` says what it owns and what it may import; tests/test_layering.py fails
when a lower room imports a higher one. Core never imports a backend, the CLI or the report.
"""
