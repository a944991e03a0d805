"""Statistics of the layers' inputs: taps, the model of running averages, the training batch size.

Owns the tap sink that merges per-sample summaries into float64 moments, the replicate model of
a running average (``running_average``) and the training batch size estimated from it.

May import: ``core.network``. Never ``core.judgement``: statistics do not know the verdict.
"""
