"""One module per API root."""
