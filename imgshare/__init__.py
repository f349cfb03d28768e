"""IMGSHARE: a self-hosted image host."""

__version__ = "0.1.0"
