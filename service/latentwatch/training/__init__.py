"""Offline tooling that builds and measures detector packs: the SAE corpus, SAE
training and quality, latent labels, probe fitting (``probes``, one recipe module per
detector under ``recipes/``), evaluation sets, calibration and evaluation with
baselines, and latent inspection. The runtime never imports it."""
