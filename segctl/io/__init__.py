"""The torch-free layer both planes share: copying files with fsspec, atomic writes, and the
places segctl keeps on disk. Imports nothing else of :mod:`segctl`; the trainer may import it.

- :mod:`segctl.io.copy`: the copy engine: :func:`~segctl.io.copy.stage` (a tree, incremental,
  resumable, verified), :func:`~segctl.io.copy.download_part` (one file into its ``.part``
  file), :func:`~segctl.io.copy.upload_atomic` (one file to remote storage).
- :mod:`segctl.io.source`: opening a URL, listing its files, reading their bytes;
  :class:`~segctl.io.source.StagingError`.
- :mod:`segctl.io.checksum`: MD5 and S3 multipart ETag checks while the bytes land.
- :mod:`segctl.io.manifest`: the manifest of a staged tree.
- :mod:`segctl.io.progress`: the progress line and byte counts.
- :mod:`segctl.io.atomic`: atomic file replacement.
- :mod:`segctl.io.home`: the state directory, ``$SEGCTL_HOME``.
- :mod:`segctl.io.tracking_store`: the embedded MLflow store (SQLite URI and creation).
- :mod:`segctl.io.weights_cache`: the pretrained-weights cache's layout and the job's side
  of it.
"""
