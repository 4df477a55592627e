"""The `rtv` command line (installed as package rtv_cli): a thin layer over `retrieval`."""
