"""Data tools for the platform: synthetic grounded datasets in the official ViLT Arrow layout."""
