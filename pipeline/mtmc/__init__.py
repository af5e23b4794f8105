"""Multi-target multi-camera tracking (MTMC): camera videos + per-camera tracks -> city-wide vehicle identities.

scene (the two on-disk layouts, read and validated), synth_city (generated scenes), tracklets (filtering, crops
by quality, tracklet features), associate (constrained clustering, dense or FAISS k-NN), evaluate (motmetrics),
run (the job end to end, outputs committed together), report (the HTML page).
"""
