"""STeCa Kit: the library behind the notebooks (environments, data, training, rollouts, calibration, evaluation)."""

__version__ = "0.1.0"
