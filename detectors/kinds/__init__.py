"""Built-in detector kinds; importing this package registers them."""

from latentwatch.detectors.kinds import latent_probe  # noqa: F401
