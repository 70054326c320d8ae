"""Analytics released with differential privacy.

So far: one party's own crowd per H3 cell (:func:`release_own_crowd`). The joint releases
(target-audience crowd across parties, ad-effect funnels) build on the same ledger,
mechanisms and maps.
"""

from .own_crowd import release_own_crowd

__all__ = ["release_own_crowd"]
