"""Data folders prepared by hand for tests: what a crash leaves behind."""

import hashlib
import os


def orphan_blob(data_dir, content):
    """A complete blob file in ``data_dir``'s store that no record references; its path."""
    sha = hashlib.sha256(content).hexdigest()
    folder = os.path.join(data_dir, "blobs", sha[:2])
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, sha)
    with open(path, "wb") as f:
        f.write(content)
    return path
