"""The mask engine: named prunable sites, exact pruning and regrowth, persistence."""
from .engine import MaskEngine
from .selection import highest, kept_count, lowest
from .site import Site, SiteKind
from .updates import SiteUpdate, prune_and_regrow

__all__ = ["MaskEngine", "Site", "SiteKind", "SiteUpdate", "highest", "kept_count", "lowest", "prune_and_regrow"]
