"""medgrpo: GRPO for medical reasoning with Hydra sweeps and honest graders."""
