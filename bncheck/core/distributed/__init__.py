"""Several processes answering as one: the collective exchange and the launch records.

Owns the ``Collective`` protocol (one process, or torchrun's ranks) and what each rank records
for the launcher (its error sentence, the outputs it committed).

May import: ``core.network`` (and ``bncheck.errors``).
"""
