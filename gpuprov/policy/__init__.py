"""The CrossGuard policy pack, shipped in the package: ``pulumi up --policy-pack <this folder>``."""
