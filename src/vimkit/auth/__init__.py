"""Authentication and authorisation of consumers (requirement Ccm-Vim.012)."""
