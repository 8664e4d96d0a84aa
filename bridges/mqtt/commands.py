"""Commands back from the broker, validated before anything is spoken.

``<base>/<site>/say/<room>``: the payload is the text, or JSON ``{"text", "person", "voice"}``;
``<base>/<site>/say_person/<name>``: text or JSON ``{"text", "voice"}``, spoken where the person is;
``<base>/<site>/stop/<room>``: stop what is playing there (the payload is ignored). A payload over
the size limit, not UTF-8, malformed JSON, an unknown key or an empty text raises ``CommandError``
with what was wrong.
"""

from __future__ import annotations

import msgspec


class CommandError(ValueError):
    """A command was refused; the text says why."""


class SayPayload(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON form of a ``say`` command."""

    text: str
    """What to say."""
    person: str = ""
    """Who it is for (informational on ``say/<room>``)."""
    voice: str | None = None
    """Voice name or path; None for the TTS stage's default."""


def parse_say(payload: bytes, limit: int) -> SayPayload:
    """The text (and person, voice) of a ``say`` payload."""
    if len(payload) > limit:
        raise CommandError(f"payload is {len(payload)} bytes, the limit is {limit} ([mqtt] max_command)")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError("payload is not UTF-8 text") from None
    if text.lstrip().startswith("{"):
        try:
            cmd = msgspec.json.decode(payload, type=SayPayload)
        except msgspec.ValidationError as exc:
            raise CommandError(f"JSON payload: {exc}") from None
        except msgspec.DecodeError as exc:
            raise CommandError(f"payload starts with '{{' but is not valid JSON: {exc}") from None
    else:
        cmd = SayPayload(text=text)
    cmd.text = cmd.text.strip()
    if not cmd.text:
        raise CommandError("nothing to say: the text is empty")
    return cmd
