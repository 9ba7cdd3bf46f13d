"""Forgery dataset generation: a plan of real videos in, a labelled, measured, reported dataset out.

Modules: ``plan`` (manifest, identities, identity-disjoint splits, pairing), ``layout`` (where each
published video goes: flat, DFDC or FaceForensics++ structure; metadata.json), ``perturb``
(DeeperForensics-1.0 distortions and FF++ compression levels), ``report`` (the HTML report) and
``pipeline`` (the Ray job that runs them all, resumably). The quality metrics and gates it applies live in
the shared ``dflray.quality`` layer, which the merge stage measures with too.
"""
