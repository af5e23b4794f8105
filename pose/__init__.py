"""Stage 1 of PAMTRI: the 36-keypoint vehicle model, heatmap codec, HRNet estimator, PCK."""
