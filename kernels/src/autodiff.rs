//! The extension's operations under `Autodiff`: each forward is recorded with a backward that
//! calls the inner backend's gradient kernels, the way burn-autodiff records its own convolution
//! and BatchNorm, so flex's gradients run our kernels too.

use burn::backend::Autodiff;
use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Init, Ops, OpsKind, OpsPrep};
use burn::backend::tensor::FloatTensor;

use crate::extension::{BnGrads, BnTrain, ConvGeom, KernelBackend, OptTensor};

#[derive(Debug)]
struct ConvBackward;

impl<B: KernelBackend> Backward<B, 2> for ConvBackward {
    type State = (NodeId, NodeId, ConvGeom);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x_state, w_state, geom) = ops.state;
        let x = cp.retrieve_node_output::<FloatTensor<B>>(x_state);
        let w = cp.retrieve_node_output::<FloatTensor<B>>(w_state);
        if let Some(node) = node_x {
            let dx = B::rk_conv2d_x_backward(x.clone(), w.clone(), grad.clone(), geom);
            grads.register::<B>(node.id, dx);
        }
        if let Some(node) = node_w {
            grads.register::<B>(node.id, B::rk_conv2d_weight_backward(x, w, grad, geom));
        }
    }
}

/// What a BatchNorm's backward needs: the checkpointed input and gamma, the batch statistics as
/// computed, and the output when ReLU followed (its zeros mask the gradient).
type BnState<B> = (
    NodeId,
    NodeId,
    FloatTensor<B>,
    FloatTensor<B>,
    f64,
    Option<FloatTensor<B>>,
);

/// The gradients of a BatchNorm (plus residual, plus ReLU) for its input, gamma and beta, and the
/// gradient of its sum, which is the residual's.
fn bn_grads<B: KernelBackend>(
    state: BnState<B>,
    grad: FloatTensor<B>,
    cp: &mut Checkpointer,
) -> BnGrads<B> {
    let (x_state, gamma_state, mean, variance, epsilon, output) = state;
    let x = cp.retrieve_node_output::<FloatTensor<B>>(x_state);
    let gamma = cp.retrieve_node_output::<FloatTensor<B>>(gamma_state);
    B::rk_batch_norm_train_backward(x, gamma, mean, variance, epsilon, grad, output.into())
}

#[derive(Debug)]
struct BnBackward;

impl<B: KernelBackend> Backward<B, 3> for BnBackward {
    type State = BnState<B>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let g = bn_grads::<B>(ops.state, grads.consume::<B>(&ops.node), cp);
        for (node, value) in ops.parents.into_iter().zip([g.x, g.gamma, g.beta]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

/// BatchNorm with a residual added to its output: the residual is a fourth parent.
#[derive(Debug)]
struct BnResidualBackward;

impl<B: KernelBackend> Backward<B, 4> for BnResidualBackward {
    type State = BnState<B>;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, cp: &mut Checkpointer) {
        let g = bn_grads::<B>(ops.state, grads.consume::<B>(&ops.node), cp);
        for (node, value) in ops.parents.into_iter().zip([g.x, g.gamma, g.beta, g.sum]) {
            if let Some(node) = node {
                grads.register::<B>(node.id, value);
            }
        }
    }
}

impl<B: KernelBackend, C: CheckpointStrategy> KernelBackend for Autodiff<B, C> {
    fn rk_conv2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geom: ConvGeom,
    ) -> FloatTensor<Self> {
        let prep = ConvBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful();
        match prep {
            OpsKind::Tracked(mut prep) => {
                let x_state = prep.checkpoint(&x);
                let w_state = prep.checkpoint(&weight);
                let out = B::rk_conv2d(x.into_primitive(), weight.into_primitive(), geom);
                prep.finish((x_state, w_state, geom), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::rk_conv2d(
                x.into_primitive(),
                weight.into_primitive(),
                geom,
            )),
        }
    }

    fn rk_batch_norm_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        residual: OptTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> BnTrain<Self> {
        let nodes = [x.node(), gamma.node(), beta.node()];
        match residual.into_option() {
            None => {
                let prep = BnBackward.prepare::<C>(nodes);
                bn_forward::<B, C, 3>(prep, [x, gamma, beta], None, epsilon, relu)
            }
            Some(r) => {
                let [a, b, c] = nodes;
                let prep = BnResidualBackward.prepare::<C>([a, b, c, r.node()]);
                bn_forward::<B, C, 4>(prep, [x, gamma, beta], Some(r), epsilon, relu)
            }
        }
    }
}

/// Runs the inner BatchNorm forward and records it with `prep`'s backward when tracked.
fn bn_forward<B: KernelBackend, C: CheckpointStrategy, const N: usize>(
    prep: OpsPrep<impl Backward<B, N, State = BnState<B>>, B, BnState<B>, C, N, Init>,
    [x, gamma, beta]: [FloatTensor<Autodiff<B, C>>; 3],
    residual: Option<FloatTensor<Autodiff<B, C>>>,
    epsilon: f64,
    relu: bool,
) -> BnTrain<Autodiff<B, C>> {
    let residual = residual.map(|r| r.into_primitive()).into();
    let beta = beta.into_primitive();
    // The inner op runs the same way tracked or not; only what is kept for backward differs.
    let run = |x: FloatTensor<Autodiff<B, C>>, gamma: FloatTensor<Autodiff<B, C>>| {
        let r = B::rk_batch_norm_train(
            x.into_primitive(),
            gamma.into_primitive(),
            beta,
            residual,
            epsilon,
            relu,
        );
        let mean = FloatTensor::<Autodiff<B, C>>::new(r.mean.clone());
        let variance = FloatTensor::<Autodiff<B, C>>::new(r.variance.clone());
        (r, mean, variance)
    };
    match prep.compute_bound().stateful() {
        OpsKind::Tracked(mut prep) => {
            let x_state = prep.checkpoint(&x);
            let gamma_state = prep.checkpoint(&gamma);
            let (r, mean, variance) = run(x, gamma);
            let output = relu.then(|| r.output.clone());
            let state = (x_state, gamma_state, r.mean, r.variance, epsilon, output);
            BnTrain {
                output: prep.finish(state, r.output),
                mean,
                variance,
            }
        }
        OpsKind::UnTracked(prep) => {
            let (r, mean, variance) = run(x, gamma);
            BnTrain {
                output: prep.finish(r.output),
                mean,
                variance,
            }
        }
    }
}
