"""The LIPT network: configuration and presets, HRM convolutions, NVSM-SA attention."""
