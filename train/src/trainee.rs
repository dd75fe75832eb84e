//! The network as Burn's learner sees it: a ResNet with a cross-entropy training step.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use rekindle_model::ResNet;

use crate::loader::Batch;

/// A ResNet being fine-tuned. A wrapper because Burn's step traits and the model live in
/// other crates.
#[derive(Module, Debug)]
pub struct Trainee {
    /// The network; parameter paths start with `net.`.
    pub net: ResNet,
}

impl Trainee {
    /// Logits, loss and targets for one batch.
    pub fn forward_classification(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.net.forward(batch.images);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Trainee {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Trainee {
    type Input = Batch;
    type Output = ClassificationOutput;

    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}

impl Trainee {
    /// One line for the run log: architecture, classes, learnable parameters.
    pub fn describe(&self) -> String {
        let c = self.net.config();
        format!(
            "{} with {} classes ({} learnable parameters)",
            c.arch,
            c.head.num_classes,
            self.net.num_learnable_params()
        )
    }
}
