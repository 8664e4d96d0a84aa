"""Home Assistant's voice over Wyoming: the gateway (wake, STT, TTS and intent services) and room satellites."""
