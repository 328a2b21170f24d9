"""An alias kept so that estimators pickled by sktransfer 0.1.0 load.

0.1.0 served frozen-stage outputs at prediction time from here; a pickle of
a fitted estimator holds ``_predstore._dropped`` for that machinery's state.
Prediction now always runs the fitted network as it is.
"""


def _dropped():
    """Return what an 0.1.0 pickle's ``_predict_stage`` now unpickles to."""
    return None
