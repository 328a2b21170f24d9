"""Frozen layers computed once: the split, the store of their outputs."""
