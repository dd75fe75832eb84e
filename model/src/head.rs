//! The classifier head: optional hidden layer, optional dropout, final linear layer (`fc`).

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::Error;

/// Largest number of classes or hidden units a head may have.
pub const MAX_WIDTH: usize = 1 << 20;

/// Configuration of the classifier head that sits on the pooled embedding.
#[derive(Config, Debug, PartialEq)]
pub struct HeadConfig {
    /// Number of output classes (logits).
    pub num_classes: usize,
    /// Width of an optional hidden layer (Linear + ReLU) before the final one.
    #[config(default = "None")]
    pub hidden: Option<usize>,
    /// Dropout probability applied right before the final linear layer; 0 disables it.
    #[config(default = 0.0)]
    pub dropout: f64,
}

/// Classifier head. With no hidden layer and no dropout it is exactly torchvision's `fc`.
#[derive(Module, Debug)]
pub struct Head {
    /// Optional hidden layer (Linear + ReLU).
    pub hidden: Option<Linear>,
    /// Optional dropout before `fc`.
    pub dropout: Option<Dropout>,
    /// Final layer; torchvision's `fc`. PyTorch's default Linear init (U(+-1/sqrt(fan_in))).
    pub fc: Linear,
}

impl HeadConfig {
    /// Checks the values a user can get wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if self.num_classes == 0 {
            return Err(Error::InvalidConfig(
                "head: num_classes must be at least 1".into(),
            ));
        }
        if self.hidden == Some(0) {
            return Err(Error::InvalidConfig(
                "head: hidden width must be at least 1".into(),
            ));
        }
        // A model file is user input: refuse sizes that would only exhaust memory.
        for (what, n) in [
            ("num_classes", Some(self.num_classes)),
            ("hidden width", self.hidden),
        ] {
            if let Some(n) = n.filter(|n| *n > MAX_WIDTH) {
                return Err(Error::InvalidConfig(format!(
                    "head: {what} {n} is larger than the supported {MAX_WIDTH}"
                )));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidConfig(format!(
                "head: dropout must be in [0, 1), got {}",
                self.dropout
            )));
        }
        Ok(())
    }

    /// Builds a freshly initialised head on `in_features`-wide embeddings.
    ///
    /// # Panics
    /// On a config that [`HeadConfig::validate`] rejects.
    pub fn init(&self, in_features: usize, device: &Device) -> Head {
        if let Err(e) = self.validate() {
            panic!("{e}");
        }
        let (hidden, fc_in) = match self.hidden {
            Some(h) => (Some(LinearConfig::new(in_features, h).init(device)), h),
            None => (None, in_features),
        };
        Head {
            hidden,
            dropout: (self.dropout > 0.0).then(|| DropoutConfig::new(self.dropout).init()),
            fc: LinearConfig::new(fc_in, self.num_classes).init(device),
        }
    }
}

impl Head {
    /// Logits `[batch, num_classes]` from embeddings `[batch, in_features]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = match &self.hidden {
            Some(h) => relu(h.forward(x)),
            None => x,
        };
        let x = match &self.dropout {
            Some(d) => d.forward(x),
            None => x,
        };
        self.fc.forward(x)
    }

    /// The configuration this head was built from, read off its layers.
    pub fn config(&self) -> HeadConfig {
        // Burn's Linear stores its weight as [d_input, d_output].
        HeadConfig {
            num_classes: self.fc.weight.dims()[1],
            hidden: self.hidden.as_ref().map(|h| h.weight.dims()[1]),
            dropout: self.dropout.as_ref().map_or(0.0, |d| d.prob),
        }
    }

    /// Width of the embeddings this head expects.
    pub fn in_features(&self) -> usize {
        match &self.hidden {
            Some(h) => h.weight.dims()[0],
            None => self.fc.weight.dims()[0],
        }
    }
}
