"""The inference service: a FastAPI app serving the CVAE of the model registry (see docs/api.md)."""
