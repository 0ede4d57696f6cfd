"""Pieces of tools/make_fixtures.py: tiny random SD pipelines and the goldens computed from them."""
