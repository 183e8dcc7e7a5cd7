"""Every workaround caviar keeps on Ray's internals or on behaviour Ray may change, in one place.

Each module names the upstream issue it works around (or says none is filed) and has a canary in
tests/code/tuning/test_ray_compat.py that fails once Ray's behaviour changes, so the workaround can
go. Together they are why pyproject.toml pins Ray to <2.61.

| module            | works around                                                          | upstream |
| ----------------- | --------------------------------------------------------------------- | -------- |
| resume_repair     | a killed driver's experiment state names a checkpoint Ray deleted     | ray-project/ray#27790 |
| time_budget       | a restored stopper is a copy apart from the callbacks; no trial list  | none filed |
| tensorboard       | TBXLoggerCallback writes HParams only at trial end; Trial.init_local_path | none filed |
| progress          | the live table's "Result logdir" line and Tuner.restore hint          | none filed |
| working_dir       | a Ray job's working_dir is replaced under the driver's cwd            | ray-project/ray#52343 |
| atomic_storage    | truncating pyarrow copy_files                                         | none filed |
| state_snapshot    | experiment and searcher states uploaded apart; state written in place | none filed |
| scheduler_replay  | a restored ASHA or median rule starts empty: its decisions are lost    | none filed |
| connection        | a cluster address that does not answer is a long hang, then a traceback | none filed |
| search_rng        | Ray's search draws trials with a private generator; fused members too  | none filed |
| moved_modules     | Ray's pickles name caviar's modules by their paths before the move     | none filed |
| stale_staging     | a resumed driver writes into an earlier driver's staging folder        | none filed |
| state_signature   | Ray's resume unpickles whatever an experiment folder holds             | none filed |
"""
