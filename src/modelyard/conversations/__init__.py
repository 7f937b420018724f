"""Server-side conversations: the gateway keeps a conversation's history so clients send only the
new turn (``conversation_id`` on the chat APIs, ``previous_response_id`` on ``/v1/responses``).

* :mod:`~modelyard.conversations.model` — the stored records (imported by the store layer).
* :mod:`~modelyard.conversations.neutral` — each protocol's turns ↔ the protocol-neutral form.
* :mod:`~modelyard.conversations.service` — expand a request's history, append its answer.
* :mod:`~modelyard.conversations.retention` — the background purge.

See ``docs/conversations.md``.
"""
