"""Evaluation metrics for pose-conditioned generation (HumanSD reference spec §6).

Modules: ``pose_ap`` (COCO keypoint AP/AR), ``cap`` (pose cosine-similarity AP), ``pce`` (person count error),
``fid`` (FID / KID), ``clip_score`` (CLIPSIM), ``features`` (image feature networks), ``inputs`` (reading generated
sets), ``evaluate`` (whole-set and per-scenario evaluation with tables), ``report`` (paper-style comparison) and
``color_adherence`` (caption colour adherence for the mannequin world).
"""
