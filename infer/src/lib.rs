//! rekindle-infer: loading a fine-tuned rekindle model file and predicting, as a library, a CLI
//! and an HTTP service. Depends on the model crate only, never on training.
