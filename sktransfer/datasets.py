"""Data sets for transfer-learning experiments.

:func:`make_digits_transfer` builds a small source/target task pair from the
digits data bundled with scikit-learn, so it works offline and in a second.
:func:`fetch_mnist` downloads MNIST or Fashion-MNIST once, verifies each file
against its published MD5 checksum, keeps it in a cache folder, and parses the
IDX files with NumPy. Nothing is downloaded when this module is imported.
"""

from __future__ import annotations

import gzip
import hashlib
import numbers
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
from sklearn.datasets import get_data_home, load_digits
from sklearn.utils import Bunch, check_random_state

__all__ = ["fetch_mnist", "make_digits_transfer"]

# Where each data set is downloaded from, and the MD5 checksum of every file.
# The checksums are the ones torchvision checks (torchvision/datasets/mnist.py).
_REMOTE = {
    "mnist": {
        "base_url": "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "md5": {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    },
    "fashion_mnist": {
        "base_url": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "md5": {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    },
}

# (images file, labels file) of each subset.
_SUBSETS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

# IDX magic numbers: 0x0801 is unsigned bytes in 1 dimension, 0x0803 in 3.
_LABELS_MAGIC = 2049
_IMAGES_MAGIC = 2051
_IMAGE_SHAPE = (28, 28)

_CHUNK_SIZE = 1 << 20
_TIMEOUT = 60

_SOURCE_DIGITS = (0, 1, 2, 3, 4)
_TARGET_DIGITS = (5, 6, 7, 8, 9)


def make_digits_transfer(
    n_labels_per_class: int = 10,
    *,
    random_state: int | np.random.RandomState | None = None,
    images: bool = False,
) -> Bunch:
    """Split the digits data set into a source task and a small target task.

    The source task holds every sample of the digits 0 to 4. The target task
    is the digits 5 to 9: its training set has ``n_labels_per_class`` samples
    of each digit, drawn at random, and every other sample of those digits
    goes to the test set. Pretraining on the source and fine-tuning on the few
    labelled target samples is the smallest transfer-learning experiment that
    still shows an effect.

    Read more in the :ref:`User Guide <quickstart>`.

    Parameters
    ----------
    n_labels_per_class : int, default=10
        Number of labelled training samples of each target digit. It must
        leave at least one test sample of every target digit, so it ranges
        from 1 to 173 (the rarest target digit, 8, has 174 samples).
    random_state : int, RandomState instance or None, default=None
        Controls which target samples are drawn for training. Pass an int for
        reproducible output across multiple function calls.
    images : bool, default=False
        If True, each sample is an image of shape ``(1, 8, 8)`` (one channel,
        as convolutional layers expect); otherwise it is a vector of 64
        pixels.

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch`
        Dictionary-like object with the following attributes. Pixels are
        ``float32`` scaled to [0, 1]; labels are the digits themselves as
        ``int64``.

        X_source : ndarray of shape (n_source, 64) or (n_source, 1, 8, 8)
            Every sample of the digits 0 to 4.
        y_source : ndarray of shape (n_source,)
            Labels of ``X_source``, in 0 to 4.
        X_target : ndarray of shape (n_target, 64) or (n_target, 1, 8, 8)
            The labelled training samples of the digits 5 to 9, with
            ``n_target = 5 * n_labels_per_class``.
        y_target : ndarray of shape (n_target,)
            Labels of ``X_target``, in 5 to 9.
        X_test : ndarray of shape (n_test, 64) or (n_test, 1, 8, 8)
            Every other sample of the digits 5 to 9.
        y_test : ndarray of shape (n_test,)
            Labels of ``X_test``, in 5 to 9.

    See Also
    --------
    fetch_mnist : MNIST and Fashion-MNIST, for a larger transfer experiment.
    sklearn.datasets.load_digits : The data set this task is built from.

    Examples
    --------
    >>> from sktransfer.datasets import make_digits_transfer
    >>> data = make_digits_transfer(n_labels_per_class=5, random_state=0)
    >>> data.X_source.shape, data.X_target.shape, data.X_test.shape
    ((901, 64), (25, 64), (871, 64))
    >>> sorted(set(data.y_target.tolist()))
    [5, 6, 7, 8, 9]
    >>> make_digits_transfer(5, random_state=0, images=True).X_target.shape
    (25, 1, 8, 8)
    """
    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)

    target_indices = [np.flatnonzero(y == digit) for digit in _TARGET_DIGITS]
    max_labels = min(len(indices) for indices in target_indices) - 1
    if not isinstance(n_labels_per_class, numbers.Integral) or isinstance(
        n_labels_per_class, bool
    ):
        msg = (
            "n_labels_per_class must be an int in the range [1, "
            f"{max_labels}]; got {n_labels_per_class!r} of type "
            f"{type(n_labels_per_class).__name__}."
        )
        raise TypeError(msg)
    if not 1 <= n_labels_per_class <= max_labels:
        msg = (
            f"n_labels_per_class must be in the range [1, {max_labels}] so that "
            "every target digit keeps at least one test sample; got "
            f"{n_labels_per_class}."
        )
        raise ValueError(msg)

    rng = check_random_state(random_state)
    train_indices = np.sort(
        np.concatenate(
            [
                rng.choice(indices, size=int(n_labels_per_class), replace=False)
                for indices in target_indices
            ]
        )
    )
    test_indices = np.setdiff1d(np.concatenate(target_indices), train_indices)
    source_indices = np.flatnonzero(np.isin(y, _SOURCE_DIGITS))

    if images:
        X = X.reshape(-1, 1, 8, 8)
    return Bunch(
        X_source=X[source_indices],
        y_source=y[source_indices],
        X_target=X[train_indices],
        y_target=y[train_indices],
        X_test=X[test_indices],
        y_test=y[test_indices],
    )


def fetch_mnist(
    dataset: str = "mnist",
    *,
    subset: str = "train",
    data_home: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST or Fashion-MNIST, downloading it on first use.

    The four gzipped IDX files of a data set are downloaded once into
    ``<data_home>/sktransfer/<dataset>/`` and checked against their published
    MD5 checksums, both right after the download and every time they are read
    from the cache. A download is written to a temporary file and renamed into
    place only once its checksum is right, so an interrupted download never
    leaves a partial file behind.

    Read more in the :ref:`User Guide <quickstart>`.

    Parameters
    ----------
    dataset : {"mnist", "fashion_mnist"}, default="mnist"
        Handwritten digits (MNIST) or images of clothing (Fashion-MNIST). Both
        have ten classes labelled 0 to 9 and images of 28 by 28 pixels.
    subset : {"train", "test"}, default="train"
        The 60,000 training images or the 10,000 test images.
    data_home : str or path-like, default=None
        Root folder of the cache, as in the fetchers of
        :mod:`sklearn.datasets`. By default it is
        :func:`sklearn.datasets.get_data_home`, usually ``~/scikit_learn_data``.
    download : bool, default=True
        If False, raise :class:`FileNotFoundError` instead of downloading a
        file that is not in the cache.

    Returns
    -------
    X : ndarray of shape (n_samples, 28, 28), dtype uint8
        Grey levels from 0 (background) to 255.
    y : ndarray of shape (n_samples,), dtype int64
        Class labels from 0 to 9.

    Raises
    ------
    FileNotFoundError
        If a file is not in the cache and ``download=False``.
    OSError
        If a file cannot be downloaded, or its checksum is not the published
        one.
    ValueError
        If ``dataset`` or ``subset`` is not one of the accepted values, or a
        file is not a valid IDX file of 28 by 28 images and their labels.

    See Also
    --------
    make_digits_transfer : A small transfer task that needs no download.

    Notes
    -----
    MNIST is downloaded from ``https://ossci-datasets.s3.amazonaws.com/mnist/``
    and Fashion-MNIST from
    ``http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/``; the
    checksums are the ones torchvision verifies. With ``download=False`` the
    files can be copied into the cache folder by hand.

    Examples
    --------
    >>> from sktransfer.datasets import fetch_mnist
    >>> X, y = fetch_mnist("fashion_mnist", subset="test")  # doctest: +SKIP
    >>> X.shape, X.dtype, y.shape, y.dtype  # doctest: +SKIP
    ((10000, 28, 28), dtype('uint8'), (10000,), dtype('int64'))
    """
    if not isinstance(dataset, str) or dataset not in _REMOTE:
        msg = f"dataset must be one of {sorted(_REMOTE)}; got {dataset!r}."
        raise ValueError(msg)
    if not isinstance(subset, str) or subset not in _SUBSETS:
        msg = f"subset must be one of {sorted(_SUBSETS)}; got {subset!r}."
        raise ValueError(msg)

    folder = Path(get_data_home(data_home)) / "sktransfer" / dataset
    remote = _REMOTE[dataset]
    paths = []
    for filename in _SUBSETS[subset]:
        path = folder / filename
        _ensure_file(
            path,
            url=remote["base_url"] + filename,
            md5=remote["md5"][filename],
            download=download,
        )
        paths.append(path)

    X = _read_idx(paths[0], magic=_IMAGES_MAGIC)
    y = _read_idx(paths[1], magic=_LABELS_MAGIC).astype(np.int64)
    if len(X) != len(y):
        msg = (
            f"{paths[0]} holds {len(X)} images but {paths[1]} holds {len(y)} "
            "labels; both files must describe the same samples."
        )
        raise ValueError(msg)
    return X, y


def _md5(path: Path) -> str:
    """Return the hexadecimal MD5 digest of the file at ``path``."""
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(_CHUNK_SIZE), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _ensure_file(path: Path, *, url: str, md5: str, download: bool) -> None:
    """Make sure ``path`` exists with checksum ``md5``, downloading it if allowed.

    A cached file with the wrong checksum is downloaded again when ``download``
    is True; otherwise it is an error, as is a missing file.
    """
    if path.is_file():
        found = _md5(path)
        if found == md5:
            return
        if not download:
            msg = (
                f"The cached file {path} is corrupted: its MD5 checksum is "
                f"{found}, expected {md5}. Delete it, or call again with "
                "download=True to download it again."
            )
            raise OSError(msg)
    elif not download:
        msg = (
            f"{path} does not exist. Call again with download=True to download "
            f"it from {url}, or copy the file there by hand."
        )
        raise FileNotFoundError(msg)
    _download(url, path, md5=md5)


def _download(url: str, path: Path, *, md5: str) -> None:
    """Download ``url`` to ``path`` if its MD5 checksum is ``md5``.

    The content is written to a temporary file next to ``path`` and renamed
    into place once its checksum is verified; on any failure the temporary
    file is removed and ``path`` is left untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".part"
    )
    tmp_path = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=_TIMEOUT) as response:
                    for chunk in iter(lambda: response.read(_CHUNK_SIZE), b""):
                        digest.update(chunk)
                        out.write(chunk)
            except urllib.error.URLError as exc:
                msg = f"Could not download {url}: {exc.reason}"
                raise OSError(msg) from exc
        found = digest.hexdigest()
        if found != md5:
            msg = (
                f"The file downloaded from {url} for {path.name} has MD5 "
                f"checksum {found}, expected {md5}; it was discarded. The "
                "download may have been corrupted: try again."
            )
            raise OSError(msg)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def _read_idx(path: Path, *, magic: int) -> np.ndarray:
    """Parse a gzipped IDX file of unsigned bytes.

    ``magic`` is 2049 for a file of labels, read as an array of shape
    ``(n,)``, or 2051 for a file of 28 by 28 images, read as ``(n, 28, 28)``.
    """
    try:
        with gzip.open(path, "rb") as stream:
            raw = stream.read()
    except (OSError, EOFError, zlib.error) as exc:
        msg = f"{path} is not a valid gzip file: {exc}"
        raise ValueError(msg) from exc

    n_dims = 1 if magic == _LABELS_MAGIC else 1 + len(_IMAGE_SHAPE)
    header_size = 4 * (1 + n_dims)
    if len(raw) < header_size:
        msg = (
            f"{path} is not a valid IDX file: it holds {len(raw)} bytes, fewer "
            f"than the {header_size} bytes of its header."
        )
        raise ValueError(msg)
    header = np.frombuffer(raw, dtype=">u4", count=1 + n_dims)
    found_magic, shape = int(header[0]), tuple(int(n) for n in header[1:])
    if found_magic != magic:
        msg = (
            f"{path} is not a valid IDX file: its magic number is {found_magic}, "
            f"expected {magic}."
        )
        raise ValueError(msg)
    if shape[1:] != _IMAGE_SHAPE[: n_dims - 1]:
        msg = f"{path} holds images of shape {shape[1:]}, expected {_IMAGE_SHAPE}."
        raise ValueError(msg)
    n_bytes = int(np.prod(shape))
    if len(raw) - header_size != n_bytes:
        msg = (
            f"{path} is not a valid IDX file: its header announces shape {shape}, "
            f"that is {n_bytes} bytes of data, but the payload holds "
            f"{len(raw) - header_size} bytes."
        )
        raise ValueError(msg)
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape).copy()
