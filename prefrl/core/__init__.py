"""The reward-learning core: everything that knows nothing of gymnasium, SB3, pygame or transformers.

Types (``types``), the preference loss (``loss``), the reward-net registry and its MLP and
CNN kinds (``nets``, ``cnn``), the ensemble (``ensemble``), its trainer (``trainer``), query
selection (``query``), oracles (``oracles``), the preference store (``store``), dataset I/O
(``dataset``), the run directory (``rundir``) and the labeling engine (``engine``). The
learners (``prefrl.control``, ``prefrl.text``) and the viewer (``prefrl.human``) build on it;
nothing here imports them.
"""
