"""LightningDataModules for every task."""
