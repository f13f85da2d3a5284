"""LightningModules: each owns its losses, metrics and optimizers; solves go through `ODEBlock`."""
