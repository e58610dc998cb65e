"""AlignSAM (Huang et al., CVPR 2024): an RL agent that places point prompts for a frozen SAM.

``environment``: the prompting environment (action space, state, reward) over cached SAM embeddings.
"""
