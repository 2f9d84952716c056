"""Imitation: GAIL (Ho & Ermon 2016) as a bilevel problem on gymnasium control tasks.

Leader: the policy π_θ (SB3 PPO on the discriminator's reward). Follower: the discriminator's
parameters ψ. Experts are scripted or trained here; demonstrations are cached as ``.npz``.
"""
