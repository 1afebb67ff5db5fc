"""Pydantic models of the information elements, shared by the server and the SDK."""
