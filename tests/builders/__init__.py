"""Test support: what test modules import besides the code under test.

Builders of inputs (images.py: digits, image bytes, decompression bombs; corpus.py: the hostile corpus),
models and registries (models.py), damaged versions (faults.py), clients (http.py, rawhttp.py, load.py,
metrics.py, browser.py), shared assertions and figures (checks.py, figures.py), the settings the tests'
servers run with (servers.py) and the external tools of the operations tests (tools.py).

Fixtures stay in conftest.py files, which import from here; no test imports from another test module or
from a conftest.py. Servers are started with loadtest.server.start_server.
"""
