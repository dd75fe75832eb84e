//! Optuna's tree-structured Parzen estimator as `TPESampler()` runs it by default for one
//! objective (Optuna 5.1, pinned in `scripts/requirements.lock`): 10 random start-up trials,
//! then the keys every finished trial has are drawn together from one multivariate density
//! (`multivariate`, Optuna's default for one objective) and the others, keys
//! under a `when` that did not always hold, one at a time; 24 candidates, prior weight 1,
//! magic clip, Optuna's gamma and weights; and its constant liar: trials still running count
//! as the worst, so workers proposing side by side are pushed away from each other's points.
//!
//! Written here because no Rust crate implements TPE; it follows Optuna's
//! `optuna/samplers/_tpe` (Bergstra et al. 2011, Watanabe 2023). `scripts/tpe_reference.py` runs
//! Optuna itself: the tests below match its split and densities, `tests/it/tpe_studies.rs` its
//! results over 200 seeded studies.

use rand::Rng;

use crate::space::{Assignment, Distribution, Space};
use crate::store::{Trial, TrialState};

/// TPE's settings; [`Default`] is Optuna's `TPESampler()`.
#[derive(Clone, Debug, PartialEq)]
pub struct Tpe {
    /// Trials drawn at random before the estimator takes over.
    pub startup_trials: usize,
    /// Candidates drawn from the good trials' density, of which the one most likely under it
    /// relative to the bad trials' density is proposed.
    pub ei_candidates: usize,
    /// Weight of the prior component (the whole range) in each density.
    pub prior_weight: f64,
    /// Count running trials as the worst, so that parallel proposals spread out.
    pub constant_liar: bool,
    /// Draw the keys every finished trial has together, from one density over all of them
    /// (Optuna's `multivariate`); off, every key is drawn on its own.
    pub multivariate: bool,
}

impl Default for Tpe {
    fn default() -> Self {
        Self {
            startup_trials: 10,
            ei_candidates: 24,
            prior_weight: 1.0,
            constant_liar: true,
            multivariate: true,
        }
    }
}

/// The trials TPE learns from, split into the good ones and the others.
struct Split<'t> {
    /// The best `gamma(n)` finished trials, by id.
    below: Vec<&'t Trial>,
    /// The rest, running ones included under the constant liar, by id.
    above: Vec<&'t Trial>,
}

impl Tpe {
    /// The next point given the `trials` so far (objective maximised when `maximize`).
    pub fn propose(
        &self,
        space: &Space,
        trials: &[Trial],
        maximize: bool,
        rng: &mut impl Rng,
    ) -> Result<Assignment, String> {
        let Some(split) = self.split(trials, maximize) else {
            return space.sample(rng);
        };
        let order = space.order()?;
        let joint = self.joint_keys(space, &order, trials);
        let mut drawn = self.draw(space, &joint, &split, rng);
        let mut point = Assignment::new();
        for key in order {
            if !space.0[key].applies(&point) {
                continue;
            }
            let value = drawn
                .remove(key)
                .or_else(|| self.draw(space, &[key], &split, rng).remove(key));
            if let Some(v) = value {
                point.insert(key.to_string(), v);
            }
        }
        Ok(point)
    }

    /// The good/bad split of `trials` as Optuna's `_split_trials` makes it, or `None` while
    /// fewer than the start-up trials have finished. As Optuna, the start-up and gamma count
    /// finished trials only; running ones (the constant liar) join the bad side.
    fn split<'t>(&self, trials: &'t [Trial], maximize: bool) -> Option<Split<'t>> {
        let ranked = self.ranked(trials, maximize);
        let finished = ranked
            .iter()
            .filter(|t| t.state != TrialState::Running)
            .count();
        if finished < self.startup_trials {
            return None;
        }
        let (below, above) = ranked.split_at(gamma(finished));
        let by_id = |side: &[&'t Trial]| {
            let mut v = side.to_vec();
            v.sort_by_key(|t| t.id);
            v
        };
        Some(Split {
            below: by_id(below),
            above: by_id(above),
        })
    }

    /// The keys drawn together: with `multivariate`, those every finished trial has, as
    /// Optuna's intersection search space (pruned trials included); keys with one value only
    /// are left to be drawn alone, as Optuna leaves out its `single()` distributions.
    fn joint_keys<'s>(&self, space: &Space, order: &[&'s str], trials: &[Trial]) -> Vec<&'s str> {
        if !self.multivariate {
            return Vec::new();
        }
        let finished = || {
            trials
                .iter()
                .filter(|t| matches!(t.state, TrialState::Complete | TrialState::Pruned))
        };
        let mut keys: Vec<&str> = order
            .iter()
            .copied()
            .filter(|k| !space.0[*k].distribution.single())
            .filter(|k| finished().all(|t| t.point.contains_key(*k)))
            .collect();
        // Optuna orders the intersection by name.
        keys.sort_unstable();
        keys
    }

    /// The best of the candidates for `keys` drawn from the good trials' density, scored by
    /// its log density over the bad trials'; empty when `keys` is.
    fn draw(&self, space: &Space, keys: &[&str], split: &Split, rng: &mut impl Rng) -> Assignment {
        if keys.is_empty() {
            return Assignment::new();
        }
        let dists: Vec<&Distribution> = keys.iter().map(|k| &space.0[*k].distribution).collect();
        let (l, g) = self.densities(&dists, keys, split);
        let mut best: Option<(f64, Vec<f64>)> = None;
        for _ in 0..self.ei_candidates.max(1) {
            let x = l.sample(rng);
            let score = l.log_pdf(&x) - g.log_pdf(&x);
            if best.as_ref().is_none_or(|(b, _)| score > *b) {
                best = Some((score, x));
            }
        }
        let x = best.map(|(_, x)| x).unwrap_or_default();
        keys.iter()
            .zip(dists)
            .zip(x)
            .map(|((k, d), x)| (k.to_string(), value(d, x)))
            .collect()
    }

    /// The good trials' density over `keys` and the other trials'.
    fn densities(&self, dists: &[&Distribution], keys: &[&str], split: &Split) -> (Parzen, Parzen) {
        let l = Parzen::new(
            dists,
            &observed(&split.below, keys, dists),
            self.prior_weight,
        );
        let g = Parzen::new(
            dists,
            &observed(&split.above, keys, dists),
            self.prior_weight,
        );
        (l, g)
    }

    /// The trials TPE learns from, best first, as Optuna's `_split_trials` orders them:
    /// complete by value; then pruned, the furthest-trained first and, at the same step, by
    /// the last value reported (NaN last); then (constant liar) running.
    fn ranked<'t>(&self, trials: &'t [Trial], maximize: bool) -> Vec<&'t Trial> {
        let score = |v: Option<f64>| {
            let v = v.filter(|v| !v.is_nan());
            v.map_or(f64::INFINITY, |v| if maximize { -v } else { v })
        };
        let key = |t: &Trial| match t.state {
            TrialState::Complete => (0, 0, score(t.value)),
            TrialState::Pruned => {
                let (step, value) = t.last.unwrap_or((0, f64::NAN));
                (1, usize::MAX - step, score(Some(value)))
            }
            _ => (2, 0, 0.0),
        };
        let mut ranked: Vec<&Trial> = trials
            .iter()
            .filter(|t| match t.state {
                TrialState::Complete | TrialState::Pruned => true,
                TrialState::Running => self.constant_liar,
                TrialState::Invalid | TrialState::Failed => false,
            })
            .collect();
        ranked.sort_by(|a, b| {
            let (ka, kb) = (key(a), key(b));
            (ka.0, ka.1)
                .cmp(&(kb.0, kb.1))
                .then(ka.2.total_cmp(&kb.2))
                .then(a.id.cmp(&b.id))
        });
        ranked
    }
}

/// Optuna's `default_gamma`: how many of `n` ranked trials count as good.
fn gamma(n: usize) -> usize {
    n.div_ceil(10).min(25)
}

/// Optuna's `default_weights`: older trials (beyond the newest 25) weigh less, linearly.
fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let step = |i: usize| {
        let lo = 1.0 / n as f64;
        if ramp <= 1 {
            lo
        } else {
            lo + (1.0 - lo) * i as f64 / (ramp - 1) as f64
        }
    };
    (0..ramp)
        .map(step)
        .chain(std::iter::repeat_n(1.0, 25))
        .collect()
}

/// Per trial (in the order given: by id, as Optuna weighs them) that has every one of `keys`,
/// its values in TPE's internal scale: log for a log-uniform key, the index for a choice.
fn observed(trials: &[&Trial], keys: &[&str], dists: &[&Distribution]) -> Vec<Vec<f64>> {
    trials
        .iter()
        .filter_map(|t| {
            keys.iter()
                .zip(dists)
                .map(|(k, d)| internal(d, t.point.get(*k)?))
                .collect::<Option<Vec<f64>>>()
        })
        .collect()
}

/// A stored value in TPE's internal scale; `None` if it does not belong to `d`.
fn internal(d: &Distribution, v: &toml::Value) -> Option<f64> {
    let number = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
    match d {
        Distribution::Uniform(..) | Distribution::Int(..) => number,
        Distribution::LogUniform(..) => number.filter(|x| *x > 0.0).map(f64::ln),
        Distribution::Choice(values) => values.iter().position(|c| c == v).map(|i| i as f64),
    }
}

/// The value of internal `x` under `d`.
fn value(d: &Distribution, x: f64) -> toml::Value {
    match d {
        Distribution::Uniform(lo, hi) => toml::Value::Float(x.clamp(*lo, *hi)),
        Distribution::LogUniform(lo, hi) => toml::Value::Float(x.exp().clamp(*lo, *hi)),
        Distribution::Int(lo, hi) => toml::Value::Integer((x.round() as i64).clamp(*lo, *hi)),
        Distribution::Choice(values) => values[(x as usize).min(values.len() - 1)].clone(),
    }
}

/// One density of TPE over one or more keys: a weighted mixture whose every component is a
/// product of one kernel per key (Optuna's `_MixtureOfProductDistribution`). Component `i` sits
/// on observation `i` in every key; the last is the prior.
struct Parzen {
    weights: Vec<f64>,
    keys: Vec<Kernels>,
}

/// One key's kernels, one per component.
enum Kernels {
    /// Truncated normals, for a range.
    Numeric(Normals),
    /// Per component, a probability per choice.
    Categorical(Vec<Vec<f64>>),
}

/// Normals truncated to `[low, high]`, one per component; `step` is 1 for integers (then each
/// integer's mass is that of its unit bin), 0 for continuous keys.
struct Normals {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    low: f64,
    high: f64,
    step: f64,
}

impl Parzen {
    /// Optuna's `_ParzenEstimator` over `obs` (per trial, a value per key, internal scale).
    fn new(dists: &[&Distribution], obs: &[Vec<f64>], prior_weight: f64) -> Self {
        let mut weights = weights(obs.len());
        weights.push(prior_weight);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let keys = dists
            .iter()
            .enumerate()
            .map(|(k, d)| {
                let column: Vec<f64> = obs.iter().map(|o| o[k]).collect();
                Kernels::new(d, &column, prior_weight)
            })
            .collect();
        Self { weights, keys }
    }

    /// A draw: a component by weight, then each key's value from that component.
    fn sample(&self, rng: &mut impl Rng) -> Vec<f64> {
        let c = pick(&self.weights, rng);
        self.keys.iter().map(|k| k.sample(c, rng)).collect()
    }

    /// The log density (log mass for integers and choices) at `x`.
    fn log_pdf(&self, x: &[f64]) -> f64 {
        let terms: Vec<f64> = (0..self.weights.len())
            .map(|c| {
                let keys: f64 = self.keys.iter().zip(x).map(|(k, x)| k.log_pdf(c, *x)).sum();
                self.weights[c].ln() + keys
            })
            .collect();
        log_sum_exp(&terms)
    }
}

impl Kernels {
    /// One key's kernels over its observations `obs` (internal scale), the prior last.
    fn new(d: &Distribution, obs: &[f64], prior_weight: f64) -> Self {
        let (low, high, step) = match d {
            Distribution::Uniform(lo, hi) => (*lo, *hi, 0.0),
            Distribution::LogUniform(lo, hi) => (lo.ln(), hi.ln(), 0.0),
            Distribution::Int(lo, hi) => (*lo as f64, *hi as f64, 1.0),
            Distribution::Choice(values) => {
                return Self::Categorical(categorical(values.len(), obs, prior_weight));
            }
        };
        let mut mus = obs.to_vec();
        let mut sigmas = sigmas(obs, low, high, step);
        mus.push(0.5 * (low + high));
        sigmas.push(high - low + step);
        Self::Numeric(Normals {
            mus,
            sigmas,
            low,
            high,
            step,
        })
    }

    fn sample(&self, component: usize, rng: &mut impl Rng) -> f64 {
        match self {
            Self::Numeric(n) => n.sample(component, rng),
            Self::Categorical(probs) => pick(&probs[component], rng) as f64,
        }
    }

    fn log_pdf(&self, component: usize, x: f64) -> f64 {
        match self {
            Self::Numeric(n) => n.log_pdf(component, x),
            Self::Categorical(probs) => probs[component][x as usize].ln(),
        }
    }
}

/// Each observed choice's component puts one count on its choice over the prior spread
/// evenly; the prior's component is the prior alone (Optuna's
/// `_calculate_categorical_distributions`).
fn categorical(n: usize, obs: &[f64], prior_weight: f64) -> Vec<Vec<f64>> {
    let kernels = obs.len() + 1;
    let mut probs = vec![vec![prior_weight / kernels as f64; n]; kernels];
    for (row, &o) in probs.iter_mut().zip(obs) {
        row[o as usize] += 1.0;
    }
    for row in &mut probs {
        let s: f64 = row.iter().sum();
        row.iter_mut().for_each(|p| *p /= s);
    }
    probs
}

impl Normals {
    /// The range the normals are truncated to (integers: out to the bins' edges).
    fn bounds(&self) -> (f64, f64) {
        (self.low - self.step / 2.0, self.high + self.step / 2.0)
    }

    fn sample(&self, c: usize, rng: &mut impl Rng) -> f64 {
        let (a, b) = self.bounds();
        let x = truncated_normal(self.mus[c], self.sigmas[c], a, b, rng);
        if self.step > 0.0 {
            x.round().clamp(self.low, self.high)
        } else {
            x
        }
    }

    fn log_pdf(&self, c: usize, x: f64) -> f64 {
        let (a, b) = self.bounds();
        let (m, s) = (self.mus[c], self.sigmas[c]);
        let z = |v: f64| (v - m) / s;
        let half = self.step / 2.0;
        let log_p = if self.step > 0.0 {
            mass(z(x - half), z(x + half)).ln()
        } else {
            -0.5 * z(x).powi(2) - (s * (2.0 * std::f64::consts::PI).sqrt()).ln()
        };
        log_p - mass(z(a), z(b)).ln()
    }
}

/// Optuna's bandwidths (5.1): each observation's distance to its farther neighbour among the
/// sorted observations and the range's ends (the first and last take their inner neighbour's
/// distance), clipped to `[range / min(100, 1 + kernels), range]`. The prior's centre is not
/// a neighbour (rekindle's first TPE, written from older Optuna sources, counted it). Tied
/// observations take their bandwidths in a stable order here; in Optuna in the order numpy's
/// unstable argsort leaves them, which differs by CPU (`scripts/tpe_reference.py` avoids ties).
fn sigmas(obs: &[f64], low: f64, high: f64, step: f64) -> Vec<f64> {
    let mut sorted: Vec<(f64, usize)> = obs.iter().copied().zip(0..).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ends = vec![low - step / 2.0];
    ends.extend(sorted.iter().map(|p| p.0));
    ends.push(high + step / 2.0);
    let n = sorted.len();
    let mut by_rank: Vec<f64> = (1..=n)
        .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
        .collect();
    if ends.len() >= 4 {
        by_rank[0] = ends[2] - ends[1];
        by_rank[n - 1] = ends[n] - ends[n - 1];
    }
    let range = high - low + step;
    let kernels = obs.len() + 1;
    let min = range / (1.0 + kernels as f64).min(100.0);
    let mut out = vec![0.0; n];
    for (s, (_, original)) in by_rank.iter().zip(&sorted) {
        out[*original] = s.clamp(min, range);
    }
    out
}

/// Standard normal mass between `za` and `zb`, kept above zero so its log is finite.
fn mass(za: f64, zb: f64) -> f64 {
    let phi = |z: f64| 0.5 * libm::erfc(-z / std::f64::consts::SQRT_2);
    // For far right tails the difference of the upper tails keeps its precision.
    let m = if za > 0.0 {
        phi(-za) - phi(-zb)
    } else {
        phi(zb) - phi(za)
    };
    m.max(f64::MIN_POSITIVE)
}

/// A normal draw restricted to `[a, b]`, by rejection: every component's centre lies in the
/// range and its spread is at most the range's width, so at least a third of its mass is in.
fn truncated_normal(mu: f64, sigma: f64, a: f64, b: f64, rng: &mut impl Rng) -> f64 {
    for _ in 0..10_000 {
        let x = mu + sigma * standard_normal(rng);
        if (a..=b).contains(&x) {
            return x;
        }
    }
    mu.clamp(a, b)
}

/// Box-Muller.
fn standard_normal(rng: &mut impl Rng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// An index drawn with probability proportional to `weights`.
fn pick(weights: &[f64], rng: &mut impl Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn log_sum_exp(terms: &[f64]) -> f64 {
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        return max;
    }
    max + terms.iter().map(|t| (t - max).exp()).sum::<f64>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn space(text: &str) -> Space {
        toml::from_str(text).expect("space")
    }

    /// A stored trial with only what TPE reads.
    fn trial(id: i64, state: TrialState, point: Assignment, value: Option<f64>) -> Trial {
        Trial {
            id,
            state,
            point,
            value,
            reason: None,
            worker: "w".into(),
            last: None,
        }
    }

    fn num(p: &Assignment, k: &str) -> f64 {
        let v = &p[k];
        v.as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .expect("number")
    }

    /// The best of `n` sequential trials on `f` (minimised), proposing with `tpe` or at random.
    fn search(s: &Space, f: &dyn Fn(&Assignment) -> f64, tpe: Option<&Tpe>, seed: u64) -> f64 {
        let mut trials: Vec<Trial> = Vec::new();
        let mut rng = StdRng::seed_from_u64(seed);
        for id in 0..60 {
            let point = match tpe {
                Some(t) => t.propose(s, &trials, false, &mut rng).expect("propose"),
                None => s.sample(&mut rng).expect("sample"),
            };
            let value = Some(f(&point));
            trials.push(trial(id, TrialState::Complete, point, value));
        }
        trials
            .iter()
            .filter_map(|t| t.value)
            .fold(f64::MAX, f64::min)
    }

    /// Mean over 30 seeds of the best value found in 60 trials, by TPE and at random.
    fn compare(s: &Space, f: &dyn Fn(&Assignment) -> f64) -> (f64, f64) {
        let tpe = Tpe::default();
        let mean =
            |by: Option<&Tpe>| (0..30).map(|seed| search(s, f, by, seed)).sum::<f64>() / 30.0;
        (mean(Some(&tpe)), mean(None))
    }

    #[test]
    fn tpe_beats_random_search_on_branin() {
        let s = space("x = { uniform = [-5.0, 10.0] }\ny = { uniform = [0.0, 15.0] }");
        let branin = |p: &Assignment| {
            let (x, y) = (num(p, "x"), num(p, "y"));
            let pi = std::f64::consts::PI;
            let b = 5.1 / (4.0 * pi * pi);
            (y - b * x * x + 5.0 / pi * x - 6.0).powi(2)
                + 10.0 * (1.0 - 1.0 / (8.0 * pi)) * x.cos()
                + 10.0
                - 0.397887
        };
        let (tpe, random) = compare(&s, &branin);
        assert!(tpe < 0.6 * random, "regret: TPE {tpe}, random {random}");
    }

    #[test]
    fn tpe_beats_random_search_on_a_mixed_log_integer_and_conditional_space() {
        // A learning rate best at 3e-3 (log scale), an integer best at 7, and an optimiser
        // choice whose momentum only exists for sgd.
        let s = space(
            r#"lr = { log-uniform = [1e-5, 1.0] }
               depth = { int = [1, 12] }
               opt = { choice = ["sgd", "adam", "rmsprop"] }
               momentum = { uniform = [0.0, 1.0], when = { opt = "sgd" } }"#,
        );
        let f = |p: &Assignment| {
            let lr = (num(p, "lr").log10() - 3e-3f64.log10()).powi(2);
            let depth = (num(p, "depth") - 7.0).powi(2) / 10.0;
            let opt = match p["opt"].as_str() {
                Some("sgd") => (num(p, "momentum") - 0.9).powi(2) * 4.0,
                Some("adam") => 0.5,
                _ => 1.0,
            };
            lr + depth + opt
        };
        let (tpe, random) = compare(&s, &f);
        assert!(tpe < 0.7 * random, "regret: TPE {tpe}, random {random}");
    }

    fn completed(s: &Space, n: i64, seed: u64) -> Vec<Trial> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n)
            .map(|id| {
                let point = s.sample(&mut rng).expect("sample");
                let value = Some((num(&point, "x") - 0.3).abs());
                trial(id, TrialState::Complete, point, value)
            })
            .collect()
    }

    #[test]
    fn proposals_reproduce_from_the_seed_and_history() {
        let s = space("x = { uniform = [0.0, 1.0] }\nc = { choice = [1, 2, 3] }");
        let trials = completed(&s, 20, 1);
        let propose = |seed| {
            Tpe::default()
                .propose(&s, &trials, false, &mut StdRng::seed_from_u64(seed))
                .expect("propose")
        };
        assert_eq!(propose(5), propose(5));
        assert_ne!(propose(5), propose(6));
    }

    #[test]
    fn the_constant_liar_keeps_a_parallel_worker_from_repeating_a_running_point() {
        let s = space("x = { uniform = [0.0, 1.0] }\ny = { uniform = [0.0, 1.0] }");
        let done = completed(&s, 30, 2);
        let liar = Tpe::default();
        let honest = Tpe {
            constant_liar: false,
            ..Tpe::default()
        };
        // Worker A proposes a point and starts it; worker B proposes next with the same draws
        // (the worst case: the same seed). Without the liar B repeats A's point every time.
        let (mut repeated_honest, mut repeated_liar) = (0, 0);
        for seed in 0..50 {
            let propose = |t: &Tpe, trials: &[Trial]| {
                t.propose(&s, trials, false, &mut StdRng::seed_from_u64(seed))
                    .expect("propose")
            };
            let first = propose(&liar, &done);
            let mut trials = done.clone();
            trials.push(trial(30, TrialState::Running, first.clone(), None));
            repeated_honest += usize::from(propose(&honest, &trials) == first);
            repeated_liar += usize::from(propose(&liar, &trials) == first);
        }
        assert_eq!(repeated_honest, 50);
        assert!(
            repeated_liar < 25,
            "the liar repeated {repeated_liar} of 50"
        );
    }

    #[test]
    fn bandwidths_follow_optunas_rule() {
        // Observations 0.2 and 0.9 on [0, 1]: sorted 0.2, 0.9 with ends 0 and 1. Distances to
        // the farther neighbour: 0.7 and 0.7 (the first and last take their inner one, 0.7);
        // clipped to [1/4, 1]. The prior's centre 0.5 is no neighbour: with it, 0.2 got 0.3.
        let s = sigmas(&[0.9, 0.2], 0.0, 1.0, 0.0);
        assert_eq!(s.len(), 2);
        assert!(
            (s[0] - 0.7).abs() < 1e-12 && (s[1] - 0.7).abs() < 1e-12,
            "{s:?}"
        );
        // Three: 0.1, 0.4, 0.95 -> 0.3 (inner), max(0.3, 0.55) = 0.55, 0.55 (inner).
        let s = sigmas(&[0.4, 0.95, 0.1], 0.0, 1.0, 0.0);
        assert!(
            (s[0] - 0.55).abs() < 1e-12
                && (s[1] - 0.55).abs() < 1e-12
                && (s[2] - 0.3).abs() < 1e-12,
            "{s:?}"
        );
        // One observation: its farther end (0.5), above the minimum 1/3.
        let s = sigmas(&[0.5], 0.0, 1.0, 0.0);
        assert!((s[0] - 0.5).abs() < 1e-12, "{s:?}");
        assert_eq!(gamma(9), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(1000), 25);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && w[4] == 1.0 && w[29] == 1.0);
    }

    #[test]
    fn densities_integrate_to_one() {
        let one = |d: Distribution, obs: &[f64]| {
            let o: Vec<Vec<f64>> = obs.iter().map(|x| vec![*x]).collect();
            Parzen::new(&[&d], &o, 1.0)
        };
        let p = one(Distribution::Uniform(0.0, 2.0), &[0.1, 1.7, 1.0]);
        let n = 20_000;
        let h = 2.0 / n as f64;
        let total: f64 = (0..n)
            .map(|i| p.log_pdf(&[(i as f64 + 0.5) * h]).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        let p = one(Distribution::Int(1, 5), &[2.0, 2.0, 5.0]);
        let total: f64 = (1..=5).map(|i| p.log_pdf(&[i as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let c = Distribution::Choice(vec![1.into(), 2.into(), 3.into()]);
        let p = one(c.clone(), &[0.0, 2.0]);
        let total: f64 = (0..3).map(|i| p.log_pdf(&[i as f64]).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        // Jointly over an integer and a choice: the masses of all 15 pairs sum to one.
        let int = Distribution::Int(1, 5);
        let p = Parzen::new(&[&int, &c], &[vec![2.0, 0.0], vec![4.0, 2.0]], 1.0);
        let total: f64 = (1..=5)
            .flat_map(|i| (0..3).map(move |j| [i as f64, j as f64]))
            .map(|x| p.log_pdf(&x).exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    /// `tpe.json` (`scripts/tpe_reference.py`, run by `cargo xtask test`): Optuna's split and
    /// densities on fixed histories.
    mod optuna {
        use std::path::PathBuf;

        use super::*;

        #[derive(serde::Deserialize)]
        struct Reference {
            optuna: String,
            histories: Vec<History>,
        }

        #[derive(serde::Deserialize)]
        struct History {
            name: String,
            space: String,
            direction: String,
            trials: Vec<RefTrial>,
            below: Vec<i64>,
            above: Vec<i64>,
            groups: Vec<Group>,
        }

        #[derive(serde::Deserialize)]
        struct RefTrial {
            id: i64,
            state: String,
            point: serde_json::Map<String, serde_json::Value>,
            value: Option<f64>,
            last: Option<(usize, Option<f64>)>,
        }

        /// Keys drawn together, points as Optuna's estimator draws them, and its log densities.
        #[derive(serde::Deserialize)]
        struct Group {
            keys: Vec<String>,
            points: Vec<Vec<f64>>,
            l: Vec<f64>,
            g: Vec<f64>,
        }

        fn reference() -> Reference {
            let dir = std::env::var_os("REKINDLE_FIXTURES")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures"));
            let path = dir.join("tpe.json");
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!("{}: {e}; run `cargo xtask test` first", path.display())
            });
            serde_json::from_str(&text).expect("tpe.json")
        }

        fn stored(t: &RefTrial) -> Trial {
            let state = match t.state.as_str() {
                "complete" => TrialState::Complete,
                "pruned" => TrialState::Pruned,
                "running" => TrialState::Running,
                other => panic!("state {other}"),
            };
            let point = t
                .point
                .iter()
                .map(|(k, v)| (k.clone(), toml::Value::try_from(v).expect("a TOML value")))
                .collect();
            let mut trial = trial(t.id, state, point, t.value);
            trial.last = t.last.map(|(step, v)| (step, v.unwrap_or(f64::NAN)));
            trial
        }

        /// Optuna's point (a float, an integer as a float, a choice's index) in TPE's
        /// internal scale.
        fn internal_point(dists: &[&Distribution], x: &[f64]) -> Vec<f64> {
            dists
                .iter()
                .zip(x)
                .map(|(d, x)| match d {
                    Distribution::LogUniform(..) => x.ln(),
                    _ => *x,
                })
                .collect()
        }

        fn close(a: f64, b: f64) -> bool {
            (a - b).abs() <= 1e-9 * b.abs().max(1.0)
        }

        #[test]
        fn the_split_the_joint_keys_and_every_density_are_optunas() {
            let r = reference();
            assert!(r.optuna.starts_with("5.1"), "Optuna {}", r.optuna);
            let tpe = Tpe::default();
            for h in &r.histories {
                let s = space(&h.space);
                let trials: Vec<Trial> = h.trials.iter().map(stored).collect();
                let split = tpe
                    .split(&trials, h.direction == "maximize")
                    .expect("past the start-up trials");
                let ids = |v: &[&Trial]| v.iter().map(|t| t.id).collect::<Vec<_>>();
                assert_eq!(ids(&split.below), h.below, "{}: good trials", h.name);
                assert_eq!(ids(&split.above), h.above, "{}: other trials", h.name);
                let order = s.order().expect("order");
                let joint = tpe.joint_keys(&s, &order, &trials);
                assert_eq!(joint, h.groups[0].keys, "{}: keys drawn together", h.name);
                for g in &h.groups {
                    let keys: Vec<&str> = g.keys.iter().map(String::as_str).collect();
                    let dists: Vec<&Distribution> =
                        keys.iter().map(|k| &s.0[*k].distribution).collect();
                    let (l, gd) = tpe.densities(&dists, &keys, &split);
                    for (i, x) in g.points.iter().enumerate() {
                        let x = internal_point(&dists, x);
                        let (ours_l, ours_g) = (l.log_pdf(&x), gd.log_pdf(&x));
                        assert!(
                            close(ours_l, g.l[i]) && close(ours_g, g.g[i]),
                            "{} {keys:?} at {x:?}: l {ours_l} vs Optuna's {}, g {ours_g} vs {}",
                            h.name,
                            g.l[i],
                            g.g[i]
                        );
                    }
                }
            }
        }
    }
}
