"""Fused trials: members sampled and grouped before any trial runs, one Ray trial per group, what a
group runs, early stopping over members, and the pilot that picks K for `fuse: auto`."""
