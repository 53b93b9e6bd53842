"""Backends behind one interface (base.py): ours (intaglio_backend.py) and xgrammar's."""
