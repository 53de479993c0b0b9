"""SpotWhisper: free-text search over H&E slides."""
__version__ = "0.1.0"
