"""The ``vimkit`` command line."""
