"""The base layer every other part may import (docs/architecture.md, "Layers"): paths,
run files and logging, progress lines, the device mesh and sharding, metrics."""
