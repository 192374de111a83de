"""Morphology: L2 features, skeletons, volumes and meshes (CAVE's L2 cache and skeleton service)."""
