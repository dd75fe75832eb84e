//! The extension's operations on flex, Burn's pure-Rust CPU backend, with our own kernels.
//!
//! burn-flex overrides none of the convolution gradients or BatchNorm's training ops, so Burn's
//! generic compositions run there (see shared/FACTS.md). These kernels take f32 tensors; any other
//! dtype goes back to Burn's operations.

mod batch_norm;
mod buffer;
mod conv;
mod gemm;

use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, ModuleOps};
use burn::backend::{DType, Flex, TensorData, TensorMetadata};

use crate::extension::{BnGrads, BnTrain, ConvGeom, KernelBackend};
use conv::ConvShape;

/// The tensor's f32 values in row-major order (copied only if it is a strided view).
fn contiguous(t: &FlexTensor) -> FlexTensor {
    t.to_contiguous()
}

fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("made contiguous by `contiguous` and checked to be f32")
}

fn tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

fn all_f32(ts: &[&FlexTensor]) -> bool {
    ts.iter().all(|t| t.dtype() == DType::F32)
}

impl KernelBackend for Flex {
    fn rk_conv2d(x: FlexTensor, weight: FlexTensor, geom: ConvGeom) -> FlexTensor {
        if !all_f32(&[&x, &weight]) {
            return Self::conv2d(x, weight, None, geom.options());
        }
        let (x, w) = (contiguous(&x), contiguous(&weight));
        let s = ConvShape::new(&x.shape(), &w.shape(), geom);
        tensor(
            conv::forward(&s, values(&x), values(&w), None, false),
            &s.y_dims(),
        )
    }

    fn rk_conv2d_bias(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        geom: ConvGeom,
        relu: bool,
    ) -> FlexTensor {
        if !all_f32(&[&x, &weight, &bias]) {
            let out = Self::conv2d(x, weight, Some(bias), geom.options());
            return if relu { Self::relu(out) } else { out };
        }
        let (x, w, b) = (contiguous(&x), contiguous(&weight), contiguous(&bias));
        let s = ConvShape::new(&x.shape(), &w.shape(), geom);
        let y = conv::forward(&s, values(&x), values(&w), Some(values(&b)), relu);
        tensor(y, &s.y_dims())
    }

    fn rk_conv2d_x_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        geom: ConvGeom,
    ) -> FlexTensor {
        if !all_f32(&[&x, &weight, &output_grad]) {
            return Self::conv2d_x_backward(x, weight, output_grad, geom.options());
        }
        let (w, dy) = (contiguous(&weight), contiguous(&output_grad));
        let s = ConvShape::new(&x.shape(), &w.shape(), geom);
        tensor(conv::x_backward(&s, values(&w), values(&dy)), &s.x_dims())
    }

    fn rk_conv2d_weight_backward(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        geom: ConvGeom,
    ) -> FlexTensor {
        if !all_f32(&[&x, &weight, &output_grad]) {
            return Self::conv2d_weight_backward(x, weight, output_grad, geom.options());
        }
        let (x, dy) = (contiguous(&x), contiguous(&output_grad));
        let s = ConvShape::new(&x.shape(), &weight.shape(), geom);
        tensor(
            conv::weight_backward(&s, values(&x), values(&dy)),
            &s.w_dims(),
        )
    }

    fn rk_batch_norm_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        epsilon: f64,
    ) -> BnTrain<Self> {
        if !all_f32(&[&x, &gamma, &beta]) {
            let r = Self::batch_norm_train(x, gamma, beta, epsilon);
            return BnTrain {
                output: r.output,
                mean: r.mean,
                variance: r.variance,
            };
        }
        let (x, gamma, beta) = (contiguous(&x), contiguous(&gamma), contiguous(&beta));
        let dims = x.shape().to_vec();
        let shape = batch_norm::Shape::of(&dims);
        let r = batch_norm::forward(&shape, values(&x), values(&gamma), values(&beta), epsilon);
        BnTrain {
            output: tensor(r.output, &dims),
            mean: tensor(r.mean, &[shape.channels]),
            variance: tensor(r.variance, &[shape.channels]),
        }
    }

    fn rk_batch_norm_train_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        mean: FlexTensor,
        variance: FlexTensor,
        epsilon: f64,
        output_grad: FlexTensor,
    ) -> BnGrads<Self> {
        if !all_f32(&[&x, &gamma, &mean, &variance, &output_grad]) {
            let g = Self::batch_norm_train_backward(x, gamma, mean, variance, epsilon, output_grad);
            return BnGrads {
                x: g.x_grad,
                gamma: g.gamma_grad,
                beta: g.beta_grad,
            };
        }
        let [x, gamma, mean, variance, dy] =
            [&x, &gamma, &mean, &variance, &output_grad].map(contiguous);
        let dims = x.shape().to_vec();
        let shape = batch_norm::Shape::of(&dims);
        let stats = batch_norm::Stats {
            mean: values(&mean),
            variance: values(&variance),
            epsilon,
        };
        let g = batch_norm::backward(&shape, values(&x), values(&gamma), &stats, values(&dy));
        BnGrads {
            x: tensor(g.x, &dims),
            gamma: tensor(g.gamma, &[shape.channels]),
            beta: tensor(g.beta, &[shape.channels]),
        }
    }
}
