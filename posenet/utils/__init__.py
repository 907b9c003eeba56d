"""Small shared helpers: atomic file writes (``io``) and the one registry idiom (``registry``)."""
