"""Evaluation: build sessions, replay them into a deployment, report accuracy; the demo and its sample.

Above the wiring (``sensorium``'s registry, deployments, embedded runs) and below the CLI and the
benchmarks; the runtime (``pipeline``) never imports it.
"""
