"""The CVAE: network, loss, checkpoint format and registry of versions."""
