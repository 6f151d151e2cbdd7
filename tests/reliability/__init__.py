"""The reliability suite: hostile input, malicious files, faults and concurrency.

Each test here states a promise segctl keeps under something going wrong (a planted pickle, a
corrupted checkpoint, a full disk, a killed scheduler daemon, eight processes at once, a
hostile recipe) and checks it against the real components: the dev Slurm cluster, MLflow
servers, an S3-compatible server and real files.
"""
