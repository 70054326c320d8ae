"""Analytics released with differential privacy.

* :func:`release_own_crowd`: one party's own crowd per H3 cell;
* :mod:`.joint_crowd`: a target audience (labels at one party) per cell of another party's
  visits, computed under BFV (exact counts, flooded results, checked inputs);
* :mod:`.funnel`: exposure -> visit -> purchase -> repeat funnel across three parties;
* :mod:`.encrypted_counts`: the sans-IO chain protocol both joint releases run on.
"""

from .own_crowd import release_own_crowd

__all__ = ["release_own_crowd"]
