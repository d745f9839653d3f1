"""Evaluation core, on arrays and tables alone: identity-grouped ``splits``, frame → video
``scoring``, ``metrics``, the evaluation protocol (``evaluation``) and ``plots``."""
