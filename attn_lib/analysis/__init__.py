"""Analyses over whole models: the atlas (every layer and head under every setting),
the report on the seed figure, and the choice of showcase heads."""
