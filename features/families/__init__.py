"""Feature families, one module each; the registry (:mod:`features.registry`) finds them here.

To add a family, add a module defining ``FAMILY = Family(...)``: its columns (with their reason
templates), the inputs it reads, its parameters and a numba kernel with the shared signature
``kernel(row, off, p, x, lead, t, lo, hi)``, writing ``row[off + i]`` for its i-th slot. Give it an
``order`` after the existing ones (the column order is part of a trained model's contract) and
``enabled_by_default=False`` if it would change the shipped default's schema; see ``content.py``.
"""
