"""Stand-ins for the world: synthetic images and videos, simulated clickers, reviewers and VOS."""
