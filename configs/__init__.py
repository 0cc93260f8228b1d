"""Default configuration shipped with leadscore (read with importlib.resources; --config DIR overrides)."""
