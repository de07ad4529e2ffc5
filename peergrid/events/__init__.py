"""Events: owners publish what changed; subscribers keep near caches and listeners informed."""

from peergrid.events.model import EntryEvent, EventBatch, EventKind

__all__ = ["EntryEvent", "EventBatch", "EventKind"]
