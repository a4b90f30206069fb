"""agents: A2C (and PPO) built from RLax losses, Haiku networks, JAX envs."""
