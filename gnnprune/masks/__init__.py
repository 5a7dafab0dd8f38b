"""The mask engine: named prunable sites, exact pruning and regrowth, persistence."""
from .distribution import WeightDistribution, kept_by_global_rank, kept_per_tensor
from .early_bird import EarlyBird, EarlyBirdConfig, decision_distance, mask_distance
from .engine import MaskEngine
from .jackpot import ScoreSearch, ScoreSearchConfig, initial_scores, straight_through, swap_count, swap_to_top
from .selection import highest, kept_count, lowest, relative_tolerance, tie_groups, tie_order, tolerant_argmax
from .site import Site, SiteKind
from .updates import SiteUpdate, prune_and_regrow

__all__ = ["EarlyBird", "EarlyBirdConfig", "MaskEngine", "ScoreSearch", "ScoreSearchConfig", "Site", "SiteKind",
           "SiteUpdate", "WeightDistribution", "decision_distance", "highest", "initial_scores", "kept_by_global_rank",
           "kept_count", "kept_per_tensor", "lowest", "mask_distance", "prune_and_regrow", "relative_tolerance",
           "straight_through", "swap_count", "swap_to_top", "tie_groups", "tie_order", "tolerant_argmax"]
