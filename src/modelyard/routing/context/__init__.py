"""Token counting per target model and context fitting per candidate deployment.

``ContextService`` (service.py) is built with the app state; ``fit`` runs once per chat request,
``count_for_target`` answers the count_tokens endpoints. See docs/context.md.
"""

from modelyard.routing.context.service import ContextService, GroupContext, Summarizer

__all__ = ["ContextService", "GroupContext", "Summarizer"]
