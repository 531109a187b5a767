"""Routing learned from recorded outcomes: the model (`model`), recorded grids (`grid`), choice rules (`policy`),
and the honest comparison against solo, vote, cascade and oracle (`report`)."""
