"""The Model Context Protocol server (``sensorium mcp``): LLM agents ask the house about presence and voice."""
