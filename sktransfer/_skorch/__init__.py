"""Everything plugged into skorch: data, losses, callbacks, the training scope."""
