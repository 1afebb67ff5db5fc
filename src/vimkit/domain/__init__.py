"""Domain services: one module per interface family; validate, decide and persist."""
