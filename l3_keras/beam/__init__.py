"""`l3 prepare` and `l3 embed` on Apache Beam (optional extra: `pip install -e .[beam]`).

The only modules of the package that import `apache_beam`:
    common.py    pipeline options (local runner defaults, KEY=VALUE flags) and file I/O on any
                 filesystem TensorFlow reads (local, gs://): listing, staging, atomic writes
    prepare.py   videos -> the same shards, sidecars and manifest.json as `data.prepare`
    embed.py     files -> the same .npz files as `embed_files`, through RunInference
"""
