//! A network's weights drawn on the CPU from a seed: the same bytes whatever the backend and
//! whatever else runs in the process (a device's own generator is shared by every test thread
//! that seeds and draws from it). Shared with infer's end-to-end tests (which include this file
//! by path: test helpers cannot be a dependency).

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use rekindle_model::{PathMapper, ResNet, map_with_paths};

/// `net` with every parameter re-drawn from a splitmix64 stream seeded with `seed`: convolution
/// and linear weights uniform within the Kaiming bound `sqrt(6 / fan_in)`, biases within
/// PyTorch's `1 / sqrt(fan_in)`, BatchNorm scale 1 and shift `beta`, running mean 0 and
/// variance 1.
pub fn drawn(net: ResNet, seed: u64, beta: f32) -> ResNet {
    map_with_paths(
        net,
        &mut Draw {
            state: seed,
            beta,
            fan_in: 1,
        },
    )
}

struct Draw {
    state: u64,
    beta: f32,
    /// The fan-in of the last weight seen, for the bias that follows it.
    fan_in: usize,
}

impl Draw {
    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f32 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 24) as f32
    }
}

impl PathMapper for Draw {
    fn map<const D: usize>(
        &mut self,
        path: &[String],
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>> {
        let shape: [usize; D] = param.shape().dims();
        let n = shape.iter().product();
        // Burn's Linear weight is [in, out]; Conv2d's [out, in, kh, kw].
        match D {
            2 => self.fan_in = shape[0],
            4 => self.fan_in = shape[1..].iter().product(),
            _ => {}
        }
        let (beta, fan_in) = (self.beta, self.fan_in as f32);
        let mut uniform = |bound: f32| -> Vec<f32> {
            (0..n)
                .map(|_| bound * (2.0 * self.uniform() - 1.0))
                .collect()
        };
        let values = match path.last().map(String::as_str) {
            Some("gamma" | "running_var") => vec![1.0; n],
            Some("beta") => vec![beta; n],
            Some("running_mean") => vec![0.0; n],
            Some("bias") => uniform(1.0 / fan_in.sqrt()),
            _ => uniform((6.0 / fan_in).sqrt()),
        };
        param.map(|t| Tensor::from_data(TensorData::new(values, shape), &t.device()))
    }
}
