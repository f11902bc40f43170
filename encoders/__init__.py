"""Vision encoders and the types that flow out of them (`VisualTokens`, `CodecSignals`)."""

from encoders.errors import BadRequest, VidsieveError
from encoders.signals import CodecSignals
from encoders.tokens import Members, VisualTokens, grid_positions

__all__ = ["BadRequest", "CodecSignals", "Members", "VidsieveError", "VisualTokens", "grid_positions"]
