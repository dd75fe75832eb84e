//! Our kernels against Burn's own operations on the same device, forward and both gradients:
//! what the tests of this crate and of the model run on random and on every ResNet shape.
//!
//! Burn's gradients come from its autodiff of its own ops (`conv2d`, `batch_norm_train`); ours
//! both from the kernels called directly and from our ops under autodiff.

use burn::tensor::module::{
    batch_norm_train as burn_batch_norm, conv2d as burn_conv2d, max_pool2d as burn_max_pool,
};
use burn::tensor::ops::{ConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Tensor};

use crate::{ConvGeom, PoolGeom, batch_norm_train, conv2d, conv2d_bias, max_pool2d, residual_relu};

/// Asserts elementwise closeness within 1e-4 of the reference's largest magnitude: sums reordered
/// over thousands of terms differ by a few ulps of the largest partial sum, not of each element.
pub fn assert_close<const D: usize>(got: Tensor<D>, want: Tensor<D>, what: &str) {
    assert_close_or_within(got, want, None, what);
}

/// As [`assert_close`], but an element may also differ by up to `1e-6 * terms[i]`, where
/// `terms[i]` is the sum of the absolute values of the terms element `i` adds up: a reduction's
/// rounding error scales with its terms, not with its result, which cancellation can make
/// arbitrarily small (BatchNorm's gamma gradient over 96 values of size ~1 can come out ~1e-2).
pub fn assert_close_sum<const D: usize>(
    got: Tensor<D>,
    want: Tensor<D>,
    terms: Tensor<D>,
    what: &str,
) {
    assert_close_or_within(got, want, Some(terms), what);
}

fn assert_close_or_within<const D: usize>(
    got: Tensor<D>,
    want: Tensor<D>,
    terms: Option<Tensor<D>>,
    what: &str,
) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let values = |t: Tensor<D>| t.into_data().try_into_vec::<f32>().expect("f32");
    let (got, want) = (values(got), values(want));
    let terms = terms.map_or_else(|| vec![0.0; want.len()], values);
    // Floored at 1e-2 (an absolute 1e-6): a reference that is all rounding noise, like the input
    // gradient of a BatchNorm over two values (exactly zero in exact arithmetic), has no scale.
    let scale = want.iter().fold(1e-2f32, |m, v| m.max(v.abs()));
    let excess = |i: usize| (got[i] - want[i]).abs() - (1e-4 * scale).max(1e-6 * terms[i]);
    let worst = (0..want.len()).max_by(|&a, &b| excess(a).total_cmp(&excess(b)));
    if let Some(at) = worst {
        assert!(
            excess(at) <= 0.0,
            "{what}: |got - want| = {:e} at {at} (got {}, want {}), reference scale {scale:e}, \
             terms {:e}",
            (got[at] - want[at]).abs(),
            got[at],
            want[at],
            terms[at]
        );
    }
}

/// A standard-normal tensor.
pub fn random<const D: usize>(dims: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(dims, Distribution::Normal(0.0, 1.0), device)
}

/// One convolution case: input dims, weight dims and geometry.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// Input dimensions.
    pub x: [usize; 4],
    /// Weight dimensions.
    pub w: [usize; 4],
    /// Stride and padding.
    pub geom: ConvGeom,
}

impl Case {
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.geom.stride, self.geom.padding, [1, 1], 1)
    }

    /// Panics, naming the case and the worst element, unless ours equals Burn's.
    pub fn check(&self) {
        let device = Device::flex();
        let ad = device.clone().autodiff();
        let x = random(self.x, &device);
        let w = random(self.w, &device);
        let b = random([self.w[0]], &device);

        // Forward, plain and with bias + ReLU.
        let want = burn_conv2d(x.clone(), w.clone(), None, self.options());
        let dy = random(want.dims(), &device);
        assert_close(
            conv2d(x.clone(), w.clone(), self.geom),
            want.clone(),
            &format!("{self:?} forward"),
        );
        let want_b = burn_conv2d(x.clone(), w.clone(), Some(b.clone()), self.options());
        let r = random(want_b.dims(), &device);
        for (add, relu) in TAILS {
            let residual = add.then(|| r.clone());
            assert_close(
                conv2d_bias(
                    x.clone(),
                    w.clone(),
                    b.clone(),
                    residual.clone(),
                    self.geom,
                    relu,
                ),
                residual_relu(want_b.clone(), residual, relu),
                &format!("{self:?} forward + bias, residual {add}, relu {relu}"),
            );
        }

        // Burn's gradients: autodiff of its own convolution.
        let xa = Tensor::from_data(x.to_data(), &ad).require_grad();
        let wa = Tensor::from_data(w.to_data(), &ad).require_grad();
        let grads = (burn_conv2d(xa.clone(), wa.clone(), None, self.options())
            * dy.clone().to_device(&ad))
        .sum()
        .backward();
        let want_dx = xa.grad(&grads).expect("x grad");
        let want_dw = wa.grad(&grads).expect("w grad");

        // Ours, called directly.
        let dx = crate::conv2d_x_backward(x.clone(), w.clone(), dy.clone(), self.geom);
        let dw = crate::conv2d_weight_backward(x.clone(), w.clone(), dy.clone(), self.geom);
        assert_close(dx, want_dx.clone(), &format!("{self:?} x gradient"));
        assert_close(dw, want_dw.clone(), &format!("{self:?} weight gradient"));

        // Ours under autodiff.
        let xo = Tensor::from_data(x.to_data(), &ad).require_grad();
        let wo = Tensor::from_data(w.to_data(), &ad).require_grad();
        let grads = (conv2d(xo.clone(), wo.clone(), self.geom)
            * Tensor::from_data(dy.to_data(), &ad))
        .sum()
        .backward();
        assert_close(
            xo.grad(&grads).expect("x grad"),
            want_dx,
            &format!("{self:?} autodiff x gradient"),
        );
        assert_close(
            wo.grad(&grads).expect("w grad"),
            want_dw,
            &format!("{self:?} autodiff weight gradient"),
        );
    }
}

/// Every (residual added, ReLU applied) combination a fused op takes.
const TAILS: [(bool, bool); 4] = [(false, false), (false, true), (true, false), (true, true)];

/// Checks BatchNorm over `dims` (`[n, c, h, w]`) against Burn, output, statistics and gradients,
/// alone and followed by each combination of residual and ReLU.
pub fn check_batch_norm(dims: [usize; 4]) {
    for (residual, relu) in TAILS {
        check_batch_norm_tail(dims, residual, relu);
    }
}

fn check_batch_norm_tail(dims: [usize; 4], residual: bool, relu: bool) {
    let device = Device::flex();
    let ad = device.clone().autodiff();
    let c = dims[1];
    // An offset mean and a non-unit spread, as activations have.
    let x = random(dims, &device).mul_scalar(3.0).add_scalar(1.5);
    let gamma = random([c], &device);
    let beta = random([c], &device);
    let r = residual.then(|| random(dims, &device));
    let dy = random(dims, &device);
    let what = format!("batch norm {dims:?}, residual {residual}, relu {relu}");

    let want = burn_batch_norm(x.clone(), gamma.clone(), beta.clone(), 1e-5);
    let stats = (want.mean.clone(), want.variance.clone());
    let got = batch_norm_train(
        x.clone(),
        gamma.clone(),
        beta.clone(),
        r.clone(),
        1e-5,
        relu,
    );
    let want_out = residual_relu(want.output, r.clone(), relu);
    assert_close(
        got.output.clone(),
        want_out.clone(),
        &format!("{what} output"),
    );
    assert_close(got.mean.clone(), want.mean, &format!("{what} mean"));
    assert_close(
        got.variance.clone(),
        want.variance,
        &format!("{what} variance"),
    );

    let leaf = |t: &Tensor<4>| Tensor::<4>::from_data(t.to_data(), &ad).require_grad();
    let leaf1 = |t: &Tensor<1>| Tensor::<1>::from_data(t.to_data(), &ad).require_grad();
    let dya = Tensor::<4>::from_data(dy.to_data(), &ad);
    // Burn's gradients for x, gamma, beta and the residual, then ours under autodiff.
    let grads_of = |ours: bool| {
        let (xl, gl, bl) = (leaf(&x), leaf1(&gamma), leaf1(&beta));
        let rl = r.as_ref().map(leaf);
        let out = if ours {
            batch_norm_train(xl.clone(), gl.clone(), bl.clone(), rl.clone(), 1e-5, relu).output
        } else {
            let bn = burn_batch_norm(xl.clone(), gl.clone(), bl.clone(), 1e-5).output;
            residual_relu(bn, rl.clone(), relu)
        };
        let grads = (out * dya.clone()).sum().backward();
        [
            xl.grad(&grads),
            gl.grad(&grads).map(|g| g.unsqueeze()),
            bl.grad(&grads).map(|g| g.unsqueeze()),
            rl.and_then(|rl| rl.grad(&grads)),
        ]
    };
    let want = grads_of(false);
    let ours = grads_of(true);
    // The sum's gradient: the output gradient where ReLU let the sum through.
    let want_sum = if relu {
        dy.clone().mask_fill(want_out.lower_equal_elem(0.0), 0.0)
    } else {
        dy.clone()
    };
    // The terms each gradient adds up: gamma's and beta's sum g * x_hat and g per channel; x's
    // is k * (g - mean(g) - x_hat * mean(g * x_hat)) with k = gamma / std, which cancels to
    // nearly nothing when a channel's values nearly coincide (k is then up to 1/sqrt(eps)).
    let sum_nhw = |t: Tensor<4>| t.sum_dim(0).sum_dim(2).sum_dim(3);
    let per_channel = |t: Tensor<4>| sum_nhw(t.abs()).reshape([1, 1, 1, c]);
    let inv_std = stats
        .1
        .add_scalar(1e-5)
        .sqrt()
        .recip()
        .reshape([1, c, 1, 1]);
    let x_hat = (x.clone() - stats.0.reshape([1, c, 1, 1])) * inv_std.clone();
    let count = (dims[0] * dims[2] * dims[3]) as f64;
    let g = want_sum.clone();
    let mean_abs = |t: Tensor<4>| sum_nhw(t.abs()).div_scalar(count);
    let x_terms = (g.clone().abs()
        + mean_abs(g.clone())
        + x_hat.clone().abs() * mean_abs(g.clone() * x_hat.clone()))
        * (gamma.clone().reshape([1, c, 1, 1]) * inv_std).abs();
    let terms = [
        Some(x_terms),
        Some(per_channel(g.clone() * x_hat)),
        Some(per_channel(g)),
        None,
    ];
    let mask = relu.then(|| got.output.clone());
    let direct = crate::batch_norm_train_backward(
        x,
        gamma,
        (got.mean, got.variance),
        1e-5,
        dy.clone(),
        mask,
    );
    assert_close(direct.sum, want_sum, &format!("{what} sum gradient"));
    let direct = [direct.x, direct.gamma.unsqueeze(), direct.beta.unsqueeze()];
    for (i, name) in ["x", "gamma", "beta", "residual"].into_iter().enumerate() {
        let Some(want) = want[i].clone() else {
            assert!(
                ours[i].is_none(),
                "{what}: {name} has a gradient only in ours"
            );
            continue;
        };
        let check = |got: Tensor<4>, label: &str| match &terms[i] {
            Some(t) => assert_close_sum(got, want.clone(), t.clone(), label),
            None => assert_close(got, want.clone(), label),
        };
        check(
            ours[i].clone().expect("our gradient"),
            &format!("{what} autodiff {name} gradient"),
        );
        if let Some(direct) = direct.get(i) {
            check(direct.clone(), &format!("{what} {name} gradient"));
        }
    }
}

/// Checks max pooling of `[n, c, h, w]` with `geom` against Burn's: the output exactly (a maximum
/// is one of the inputs), and under autodiff the input gradient too.
pub fn check_max_pool(dims: [usize; 4], geom: PoolGeom) {
    let device = Device::flex();
    let x = random(dims, &device);
    let what = format!("max pool {dims:?} {geom:?}");
    let options = MaxPoolOptions::new(geom.kernel)
        .with_stride(geom.stride)
        .with_padding(geom.padding);
    let burn = |x: Tensor<4>| burn_max_pool(x, options.clone());
    let want = burn(x.clone());
    let got = max_pool2d(x.clone(), geom);
    assert_eq!(
        got.into_data().try_to_vec::<f32>().expect("f32"),
        want.clone().into_data().try_to_vec::<f32>().expect("f32"),
        "{what}: output"
    );

    let ad = device.autodiff();
    let dy = Tensor::<4>::from_data(random(want.dims(), &Device::flex()).to_data(), &ad);
    let grad = |ours: bool| {
        let xl = Tensor::<4>::from_data(x.to_data(), &ad).require_grad();
        let y = if ours {
            max_pool2d(xl.clone(), geom)
        } else {
            burn(xl.clone())
        };
        let grads = (y * dy.clone()).sum().backward();
        xl.grad(&grads).expect("x grad")
    };
    assert_close(
        grad(true),
        grad(false),
        &format!("{what}: autodiff x gradient"),
    );
}
