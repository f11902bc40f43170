"""Built-in compression strategies, one module each; importing this package registers them."""

from tokencomp.strategies import codec, divprune, none, query, temporal, tome, uniform  # noqa: F401
