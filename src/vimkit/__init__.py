"""vimkit: a VIM implementing the ETSI NFV CCM-VIM reference point."""

__version__ = "0.1.0"
API_VERSION = "1.0.0"
