"""Column mappings for flat lead tables, shipped as package data."""
