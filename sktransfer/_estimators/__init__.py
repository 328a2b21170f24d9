"""The scikit-learn face: the estimators, pretraining, defaults, repr."""
