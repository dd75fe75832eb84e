//! rekindle-train: fine-tuning a rekindle ResNet on Burn's learner (strategies, optimisers,
//! schedules, checkpoints). Depends on the model and import crates; filled by the train issues.
