"""The stages a job runs around its search: stage 0's pretraining (on disk or on the store), the LR
range test, coarse-to-fine rounds, the seed re-runs, and `caviar train`'s single run."""
