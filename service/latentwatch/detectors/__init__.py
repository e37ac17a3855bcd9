"""Detectors as code: the interface, spec and registry (``base``), one module per kind
(``kinds/``), the probe artifact (``probe``), SAE loading (``saes``), verdict and alert
records (``records``), and where the per-model packs live (``packs``)."""
