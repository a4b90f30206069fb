"""Launchers: absl apps that wire configs to the lopt and agents libraries.

Apps (flags + main; none imports another): train, meta_train, evaluate,
peer_check, quickstart, benchmark. Their work lives in library modules that
any app or test may import: common (the config -> env / agent / optimizer
factory, progress, outputs), training, meta_training, comparison, peer.
"""
