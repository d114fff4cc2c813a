"""The loss landscape of stored solutions: batched parameter points, curves, distances, volume, sharpness, the sublevel set, their plots."""
