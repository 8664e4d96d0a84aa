"""Bridges to other home systems: hub clients that speak their protocols (Wyoming for Home Assistant's voice)."""
