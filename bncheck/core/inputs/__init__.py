"""Reading the user's sample data: array files, image folders, Python datasets and factories.

Owns turning ``--data`` (and ``--arch``'s ``module:factory``) into a ``SampleSource`` that loads
index batches, with one plain sentence for every file it cannot read.

May import: ``core.network`` (and ``bncheck.errors``).
"""
