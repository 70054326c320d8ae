"""Synthetic city data sets with known ground truth, and the shipped sample.

``make_city`` generates a city (districts, POIs, campaigns) and three parties' tables
(retailer, media owner, mobile operator) over an overlapping population, plus ground truth
for crowd counts, campaign funnels and the planted exposure effect.
"""

from fedlab_kit.data.city import (
    GENERATOR_VERSION,
    City,
    make_and_write,
    make_city,
    write_city,
)
from fedlab_kit.data.sample import (
    load_basemap,
    load_campaigns,
    load_districts,
    load_footfall,
    load_pois,
    load_sample,
    load_sample_visits,
    load_truth,
    sample_dir,
)

__all__ = [
    "GENERATOR_VERSION",
    "City",
    "load_basemap",
    "load_campaigns",
    "load_districts",
    "load_footfall",
    "load_pois",
    "load_sample",
    "load_sample_visits",
    "load_truth",
    "make_and_write",
    "make_city",
    "sample_dir",
    "write_city",
]
