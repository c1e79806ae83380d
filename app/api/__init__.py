"""HTTP layer: typed dependencies and the routers."""
