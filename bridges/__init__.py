"""Bridges to the systems a home already runs: hub clients that speak their protocols.

``bridges/wyoming``: Home Assistant's voice (Wyoming); ``bridges/mqtt``: presence, events and commands
over MQTT (Home Assistant discovery, Node-RED, openHAB). Each depends on ``pipeline`` only (the client
API, the messages, the deployment file), never on ``nodes`` or ``models``; ``sensorium/cli/commands`` wires
them to the CLI.
"""
