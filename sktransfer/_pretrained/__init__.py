"""The pretrained record, its weight files and its transport to Dask.

``_Pretrained`` is re-exported here because sktransfer 0.1.0 kept it in a
module of this name, ``sktransfer._pretrained``, which its pickles name.
"""

from ._record import _Pretrained

__all__ = ["_Pretrained"]
