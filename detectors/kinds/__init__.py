"""Built-in detector kinds; importing this package registers them."""

from latentwatch.detectors.kinds import absence, latent_probe, lookback_probe  # noqa: F401
