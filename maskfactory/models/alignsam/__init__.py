"""AlignSAM (Huang et al., CVPR 2024): an RL agent that places point prompts for a frozen SAM.

Read in this order: ``environment`` (actions, state, reward over cached SAM embeddings), ``srm``
(the semantic recalibration module that labels points), ``ppo`` (the actor-critic and PPO),
``agent`` (one task's policy + SRM and its checkpoint), ``trainer`` (few-shot training) and
``prompter`` (batched inference).
"""
