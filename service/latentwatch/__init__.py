"""latentwatch: monitor an LLM from the inside."""

__version__ = "0.1.0"
