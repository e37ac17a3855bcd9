"""vLLM: a general plugin that only wires things up (``plugin``), the worker extension
holding the capture hooks (``worker``), and the API-server side that aborts flagged
requests (``abort``)."""
