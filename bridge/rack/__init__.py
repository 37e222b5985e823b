"""Rack configs, validation and supervision. Filled in by the rack issue; imports adapters."""
