"""Learning a router from recorded outcomes: training data from ZeroEval-layout grids and from `baton eval` runs, and the
held-out comparison that says whether a router earns its keep. Beside eval; the router itself (`engine.router`) is what
checks and runs use, and needs none of this."""
