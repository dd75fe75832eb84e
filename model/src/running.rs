//! BatchNorm's running statistics, moved as PyTorch moves them, on the thread that called the
//! forward.
//!
//! Burn's `RunningState` keeps one pending value per thread and `value_sync` folds in only the
//! reading thread's. A forward run on rayon's pool ([`rekindle_kernels::on_pool`]) lands on
//! whichever worker is free, so updating there would mix steps up (and break exact resume).
//! [`deferring`] holds the updates back while the pool runs the forward; [`Deferred::apply`]
//! makes them on the caller's thread, exactly as if the forward had run there. Several callers
//! (data-parallel devices, one thread each) keep their own chains, as Burn intends.

use std::cell::RefCell;

use burn::module::RunningState;
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

/// One BatchNorm's batch statistics, waiting to move its running statistics.
struct Update {
    running_mean: RunningState<Tensor<1>>,
    running_var: RunningState<Tensor<1>>,
    momentum: f64,
    mean: Tensor<1>,
    variance: Tensor<1>,
    count: usize,
}

thread_local! {
    /// The updates held back on this thread, while a [`deferring`] call runs here.
    static HELD: RefCell<Option<Vec<Update>>> = const { RefCell::new(None) };
}

/// Moves `bn`'s running statistics towards a batch's `mean` and biased `variance`, measured over
/// `count` values per channel: now, or when the enclosing [`deferring`] call's updates are
/// applied.
pub(crate) fn track(bn: &BatchNorm, mean: Tensor<1>, variance: Tensor<1>, count: usize) {
    let update = Update {
        running_mean: bn.running_mean.clone(),
        running_var: bn.running_var.clone(),
        momentum: bn.momentum,
        mean: mean.detach(),
        variance: variance.detach(),
        count,
    };
    let left = HELD.with_borrow_mut(|held| match held {
        Some(held) => {
            held.push(update);
            None
        }
        None => Some(update),
    });
    if let Some(update) = left {
        update.apply();
    }
}

/// Runs `f`, holding back the running-statistics updates of the BatchNorms it trains. Calls
/// nest (a worker waiting inside one forward may run another caller's): each gets its own.
pub(crate) fn deferring<R>(f: impl FnOnce() -> R) -> (R, Deferred) {
    /// Puts back the enclosing call's updates when `f` returns or unwinds.
    struct Restore(Option<Vec<Update>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            HELD.with_borrow_mut(|held| *held = outer);
        }
    }
    let restore = Restore(HELD.with_borrow_mut(|held| held.replace(Vec::new())));
    let r = f();
    let held = HELD.with_borrow_mut(Option::take).unwrap_or_default();
    drop(restore);
    (r, Deferred(held))
}

/// Running-statistics updates held back by [`deferring`], in the order the forward made them.
pub(crate) struct Deferred(Vec<Update>);

impl Deferred {
    /// Makes the updates on this thread.
    pub(crate) fn apply(self) {
        self.0.into_iter().for_each(Update::apply);
    }
}

impl Update {
    fn apply(self) {
        // PyTorch moves running_var towards the *unbiased* batch variance (burn-nn uses the
        // biased one, which differs by n / (n - 1): 2x for a 1x1 map at batch 2).
        let count = self.count as f64;
        let unbiased = if count > 1.0 {
            count / (count - 1.0)
        } else {
            1.0
        };
        let m = self.momentum;
        let device = self.mean.device();
        let running_mean = self.running_mean.value_sync().to_device(&device);
        let running_var = self.running_var.value_sync().to_device(&device);
        let mean = running_mean
            .mul_scalar(1.0 - m)
            .add(self.mean.mul_scalar(m));
        let var = running_var
            .mul_scalar(1.0 - m)
            .add(self.variance.mul_scalar(m * unbiased));
        self.running_mean.update(mean.detach());
        self.running_var.update(var.detach());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::Arch;
    use crate::head::HeadConfig;
    use crate::params::{PathVisitor, is_running_stat, visit_with_paths};
    use crate::resnet::{ResNet, ResNetConfig};
    use burn::module::{Module, Param};
    use burn::tensor::{Device, Distribution};

    struct Stats(Vec<Vec<f32>>);

    impl PathVisitor for Stats {
        fn visit<const D: usize>(&mut self, path: &[String], param: &Param<Tensor<D>>) {
            if is_running_stat(path) {
                let values = param.val().into_data().try_to_vec::<f32>();
                self.0.push(values.expect("f32 statistics"));
            }
        }
    }

    /// Every running statistic, with every thread's pending value folded in (`valid` syncs).
    fn stats(model: &ResNet) -> Vec<Vec<f32>> {
        let mut stats = Stats(Vec::new());
        visit_with_paths(&model.valid(), &mut stats);
        stats.0
    }

    /// Training forwards run on another thread each step move the running statistics exactly
    /// as forwards on the caller's thread do, whether held back by hand or by `ResNet::forward`
    /// on rayon's pool; made on each forward's own thread instead, they lose steps.
    #[test]
    fn forwards_elsewhere_move_running_statistics_as_on_the_callers_thread() {
        let device = Device::flex().autodiff();
        device.seed(1);
        let config = ResNetConfig::new(Arch::Resnet18, HeadConfig::new(3));
        let here = config.init(&device);
        let fresh = || config.init(&device).load_record(here.clone().into_record());
        let (held, pooled, unheld) = (fresh(), fresh(), fresh());
        for _ in 0..3 {
            let x = Tensor::<4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
            let _ = here.features(x.clone());
            let (xh, xu) = (x.clone(), x.clone());
            let (held, unheld) = (&held, &unheld);
            let (_, deferred) = std::thread::scope(|s| {
                s.spawn(move || deferring(|| held.features(xh)))
                    .join()
                    .expect("forward")
            });
            deferred.apply();
            std::thread::scope(|s| {
                s.spawn(move || unheld.features(xu))
                    .join()
                    .expect("forward")
            });
            let _ = pooled.forward(x);
        }
        let want = stats(&here);
        assert_eq!(stats(&held), want);
        assert_eq!(stats(&pooled), want);
        assert_ne!(stats(&unheld), want, "the control should lose steps");
    }
}
