"""The Open Inference Protocol (KServe v2 / Triton HTTP/REST) beside the service's own API.

`tensors` decodes and encodes tensors (JSON data and the binary tensor data extension), `models`
declares the protocol's models and computes them through the service's model pool and batcher,
`errors` gives every /v2 refusal the protocol's `{"error": ...}` body and `routes` holds the endpoints.
"""
