"""The figure build: the spec, one panel, the papermill runner, the drawings and the
regression comparison. It runs from a checkout (:mod:`attn_lib.figures.paths`)."""
