"""The experiment layer: Hydra apps over the library (``python -m experiments.run``, ...).

``${run_id:}`` (used by ``conf/hydra/default.yaml``) is a random token drawn once per run, the
same at every use: with the start time it names the run directory, so that two runs of the
same name started in the same second (even on two hosts) never share one.
"""

import secrets

from omegaconf import OmegaConf

# cached like Hydra's ${now:}: a multirun's jobs get the token of their sweep
OmegaConf.register_new_resolver("run_id", lambda: secrets.token_hex(4), use_cache=True,
                                replace=True)
