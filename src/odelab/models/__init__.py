"""Plain `nn.Module`s: vector fields and networks that tasks train."""
