"""The run core that every driver of the models shares (``batch``, ``eval``, the server).

- :mod:`~think2seg.runs.policy`: what a run does with an existing output (resume, retry the
  failed, overwrite, refuse), and the parameter check of a continued run, over a
  :class:`~think2seg.runs.policy.RunStore` (the batch GeoPackage, the evaluation cache);
- :mod:`~think2seg.runs.push`: items through the models at the planned micro-batch size, split on
  out-of-memory, a failing item failing alone with its message;
- :mod:`~think2seg.runs.states`: the states of tiles, samples and jobs.
"""
