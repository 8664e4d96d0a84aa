"""Applications built on the public client API (``pipeline.client``): the built-in agent. They import the
runtime core only, never the wiring, the stages or the CLI; the CLI and the evaluation tools run them."""
