//! The extension's operations on flex, Burn's pure-Rust CPU backend, with our own kernels.
//!
//! burn-flex overrides none of the convolution gradients or BatchNorm's training ops, so Burn's
//! generic compositions run there (see shared/FACTS.md). These kernels take f32 tensors; any other
//! dtype goes back to Burn's operations.

mod batch_norm;
mod buffer;
mod conv;
mod gemm;
mod pool;

use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::{DType, Flex, TensorData, TensorMetadata};

use crate::extension::{BnGrads, BnTrain, ConvGeom, KernelBackend, OptTensor, PoolGeom, composed};
use conv::ConvShape;

/// ReLU as burn-flex computes it: NaN propagates (as in PyTorch), where `f32::max` would turn it
/// into 0 and hide a diverged run.
#[inline(always)]
fn relu(x: f32) -> f32 {
    if relu_passes(x) { x } else { 0.0 }
}

/// Whether ReLU passes `x` (its output is `x`), and so its gradient: positive or NaN.
#[inline(always)]
fn relu_passes(x: f32) -> bool {
    x.is_nan() || x > 0.0
}

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
        let t = conv::Tail::default();
        tensor(conv::forward(&s, values(&x), values(&w), &t), &s.y_dims())
    }

    fn rk_conv2d_bias(
        x: FlexTensor,
        weight: FlexTensor,
        bias: FlexTensor,
        residual: OptTensor<Self>,
        geom: ConvGeom,
        relu: bool,
    ) -> FlexTensor {
        let residual = residual.into_option();
        let mut all = vec![&x, &weight, &bias];
        all.extend(residual.as_ref());
        if !all_f32(&all) {
            return composed::conv2d_bias::<Self>(x, weight, bias, residual, geom, relu);
        }
        let (x, w, b) = (contiguous(&x), contiguous(&weight), contiguous(&bias));
        let residual = residual.map(|r| contiguous(&r));
        let s = ConvShape::new(&x.shape(), &w.shape(), geom);
        let t = conv::Tail {
            bias: Some(values(&b)),
            residual: residual.as_ref().map(values),
            relu,
        };
        tensor(conv::forward(&s, values(&x), values(&w), &t), &s.y_dims())
    }

    fn rk_max_pool2d(x: FlexTensor, geom: PoolGeom) -> FlexTensor {
        if !all_f32(&[&x]) {
            return Self::max_pool2d(x, geom.kernel, geom.stride, geom.padding, [1, 1], false);
        }
        let x = contiguous(&x);
        let s = pool::Shape::new(&x.shape(), geom);
        tensor(pool::max_pool(&s, values(&x)), &s.y_dims())
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
        residual: OptTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> BnTrain<Self> {
        let residual = residual.into_option();
        let mut all = vec![&x, &gamma, &beta];
        all.extend(residual.as_ref());
        if !all_f32(&all) {
            return composed::batch_norm_train::<Self>(x, gamma, beta, residual, epsilon, relu);
        }
        let (x, gamma, beta) = (contiguous(&x), contiguous(&gamma), contiguous(&beta));
        let residual = residual.map(|r| contiguous(&r));
        let dims = x.shape().to_vec();
        let shape = batch_norm::Shape::of(&dims);
        let t = batch_norm::Tail {
            residual: residual.as_ref().map(values),
            relu,
        };
        let r = batch_norm::forward(
            &shape,
            values(&x),
            values(&gamma),
            values(&beta),
            epsilon,
            &t,
        );
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
        output: OptTensor<Self>,
    ) -> BnGrads<Self> {
        let output = output.into_option();
        let mut all = vec![&x, &gamma, &mean, &variance, &output_grad];
        all.extend(output.as_ref());
        if !all_f32(&all) {
            let stats = [mean, variance];
            return composed::batch_norm_train_backward::<Self>(
                x,
                gamma,
                stats,
                epsilon,
                output_grad,
                output,
            );
        }
        let [x, gamma, mean, variance, dy] =
            [&x, &gamma, &mean, &variance, &output_grad].map(contiguous);
        let output = output.map(|y| contiguous(&y));
        let dims = x.shape().to_vec();
        let shape = batch_norm::Shape::of(&dims);
        let stats = batch_norm::Stats {
            mean: values(&mean),
            variance: values(&variance),
            epsilon,
        };
        let mask = output.as_ref().map(values);
        let g = batch_norm::backward(
            &shape,
            values(&x),
            values(&gamma),
            &stats,
            values(&dy),
            mask,
        );
        BnGrads {
            x: tensor(g.x, &dims),
            gamma: tensor(g.gamma, &[shape.channels]),
            beta: tensor(g.beta, &[shape.channels]),
            // Without ReLU the sum's gradient is the output gradient itself: no copy.
            sum: g.sum.map_or(output_grad, |s| tensor(s, &dims)),
        }
    }
}
