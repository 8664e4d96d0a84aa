"""Bridges from the hub to the systems a home already runs: MQTT (Home Assistant, Node-RED, openHAB).

Each bridge is a hub client: it depends on ``pipeline`` only (the client API, the messages, the
deployment file), never on ``nodes`` or ``models``; ``sensorium/commands`` wires it to the CLI.
"""
