"""Several rportd nodes as one: PostgreSQL for what they share, NATS for what they tell each
other (docs/architecture.md, "The cluster"). Imported only with ``[cluster] nats_url``."""

from .node import Cluster

__all__ = ["Cluster"]
