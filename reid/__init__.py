"""Stage 2 of PAMTRI: pose-aware multi-task ReID network, StRDAN training, losses, samplers, metrics."""
