"""Per-latent example sets in bounded memory: activating contexts, verified and hard negatives, windows, seeded keys."""
