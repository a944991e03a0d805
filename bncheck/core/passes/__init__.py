"""Passes over the samples: batches through a model, outputs parked on disk, taps merged, and
the plan of the reference (its batch size, its samples, their order).

May import: ``core.network``, ``core.inputs``, ``core.distributed``, ``core.stats``.
"""
