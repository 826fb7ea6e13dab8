"""Optional framework integrations, imported only when asked for.

* ``spectralens.monitor.integrations.hf``: ``SpectralMonitorCallback`` for ``transformers.Trainer``
  (``pip install spectralens[transformers]``);
* ``spectralens.monitor.integrations.lightning``: ``SpectralMonitorCallback`` for Lightning
  (``pip install spectralens[lightning]``).
"""
