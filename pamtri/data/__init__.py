"""The data layer below both stages: records (``records``), one reader per on-disk format (``readers``), the
reference label CSVs (``labels``), attribute vocabularies (``attributes``) and robust image I/O (``images``).

It knows the keypoint schema (``pamtri.pose.keypoints``: 36 keypoints, a leaf module) because records and label
files carry keypoints; it imports nothing else from the stages.
"""
