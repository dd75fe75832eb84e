//! Optuna's tree-structured Parzen estimator with its `TPESampler()` defaults (independent
//! per key, 10 random start-up trials, 24 candidates, prior weight 1, magic clip, Optuna's
//! gamma and weights), plus its constant liar: trials still running count as the worst, so
//! workers proposing side by side are pushed away from each other's points.
//!
//! Written here because no Rust crate implements TPE; it follows Optuna's
//! `optuna/samplers/_tpe` (Bergstra et al. 2011, Watanabe 2023).

use rand::Rng;

use crate::space::{Assignment, Distribution, Space};
use crate::store::{Trial, TrialState};

/// TPE's settings; [`Default`] is Optuna's `TPESampler(constant_liar=True)`.
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
}

impl Default for Tpe {
    fn default() -> Self {
        Self {
            startup_trials: 10,
            ei_candidates: 24,
            prior_weight: 1.0,
            constant_liar: true,
        }
    }
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
        let ranked = self.ranked(trials, maximize);
        // As Optuna: the start-up and the good/bad split count finished trials only; running
        // ones (the constant liar) join the bad side.
        let finished = ranked
            .iter()
            .filter(|t| t.state != TrialState::Running)
            .count();
        if finished < self.startup_trials {
            return space.sample(rng);
        }
        let (below, above) = ranked.split_at(gamma(finished));
        let mut point = Assignment::new();
        for key in space.order()? {
            let param = &space.0[key];
            if !param.applies(&point) {
                continue;
            }
            let d = &param.distribution;
            let l = Parzen::new(d, &observed(below, key, d), self.prior_weight);
            let g = Parzen::new(d, &observed(above, key, d), self.prior_weight);
            let mut best = (f64::NEG_INFINITY, None);
            for _ in 0..self.ei_candidates.max(1) {
                let x = l.sample(rng);
                let score = l.log_pdf(x) - g.log_pdf(x);
                if best.1.is_none() || score > best.0 {
                    best = (score, Some(x));
                }
            }
            if let (_, Some(x)) = best {
                point.insert(key.to_string(), value(d, x));
            }
        }
        Ok(point)
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

/// The values `trials` (sorted by id, as Optuna weighs them) took for `key`, in TPE's internal
/// scale: log for a log-uniform key, the index for a choice.
fn observed(trials: &[&Trial], key: &str, d: &Distribution) -> Vec<f64> {
    let mut by_id: Vec<&&Trial> = trials.iter().collect();
    by_id.sort_by_key(|t| t.id);
    by_id
        .into_iter()
        .filter_map(|t| internal(d, t.point.get(key)?))
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

/// One density of TPE: a mixture over the observations plus the prior.
enum Parzen {
    /// Truncated normals, for a range.
    Numeric(Normals),
    /// Per component, a probability per choice.
    Categorical {
        weights: Vec<f64>,
        probs: Vec<Vec<f64>>,
    },
}

/// A weighted mixture of normals truncated to `[low, high]`; `step` is 1 for integers (then
/// each integer's mass is that of its unit bin), 0 for continuous keys.
struct Normals {
    weights: Vec<f64>,
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    low: f64,
    high: f64,
    step: f64,
}

impl Parzen {
    /// Optuna's `_ParzenEstimator` for one key over `obs` (internal scale).
    fn new(d: &Distribution, obs: &[f64], prior_weight: f64) -> Self {
        let mut weights = weights(obs.len());
        weights.push(prior_weight);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        let (low, high, step) = match d {
            Distribution::Uniform(lo, hi) => (*lo, *hi, 0.0),
            Distribution::LogUniform(lo, hi) => (lo.ln(), hi.ln(), 0.0),
            Distribution::Int(lo, hi) => (*lo as f64, *hi as f64, 1.0),
            Distribution::Choice(values) => {
                return Self::categorical(values.len(), obs, weights, prior_weight);
            }
        };
        let mut mus = obs.to_vec();
        let mut sigmas = sigmas(obs, low, high, step);
        mus.push(0.5 * (low + high));
        sigmas.push(high - low + step);
        Self::Numeric(Normals {
            weights,
            mus,
            sigmas,
            low,
            high,
            step,
        })
    }

    /// Each observed choice's component puts one count on its choice over the prior spread
    /// evenly (Optuna's `_calculate_categorical_distributions`).
    fn categorical(n: usize, obs: &[f64], weights: Vec<f64>, prior_weight: f64) -> Self {
        let kernels = obs.len() + 1;
        let mut probs = vec![vec![prior_weight / kernels as f64; n]; kernels];
        for (row, &o) in probs.iter_mut().zip(obs) {
            row[o as usize] += 1.0;
        }
        for row in &mut probs {
            let s: f64 = row.iter().sum();
            row.iter_mut().for_each(|p| *p /= s);
        }
        Self::Categorical { weights, probs }
    }

    /// A draw: a component by weight, then a value from it.
    fn sample(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Self::Numeric(n) => n.sample(rng),
            Self::Categorical { weights, probs } => pick(&probs[pick(weights, rng)], rng) as f64,
        }
    }

    /// The log density (log mass for integers and choices) at `x`.
    fn log_pdf(&self, x: f64) -> f64 {
        match self {
            Self::Numeric(n) => n.log_pdf(x),
            Self::Categorical { weights, probs } => {
                let terms: Vec<f64> = weights
                    .iter()
                    .zip(probs)
                    .map(|(w, row)| w.ln() + row[x as usize].ln())
                    .collect();
                log_sum_exp(&terms)
            }
        }
    }
}

impl Normals {
    /// The range the normals are truncated to (integers: out to the bins' edges).
    fn bounds(&self) -> (f64, f64) {
        (self.low - self.step / 2.0, self.high + self.step / 2.0)
    }

    fn sample(&self, rng: &mut impl Rng) -> f64 {
        let k = pick(&self.weights, rng);
        let (a, b) = self.bounds();
        let x = truncated_normal(self.mus[k], self.sigmas[k], a, b, rng);
        if self.step > 0.0 {
            x.round().clamp(self.low, self.high)
        } else {
            x
        }
    }

    fn log_pdf(&self, x: f64) -> f64 {
        let (a, b) = self.bounds();
        let half = self.step / 2.0;
        let terms: Vec<f64> = (0..self.mus.len())
            .map(|k| {
                let (m, s) = (self.mus[k], self.sigmas[k]);
                let z = |v: f64| (v - m) / s;
                let log_p = if self.step > 0.0 {
                    mass(z(x - half), z(x + half)).ln()
                } else {
                    -0.5 * z(x).powi(2) - (s * (2.0 * std::f64::consts::PI).sqrt()).ln()
                };
                self.weights[k].ln() + log_p - mass(z(a), z(b)).ln()
            })
            .collect();
        log_sum_exp(&terms)
    }
}

/// Optuna's bandwidths: each observation's distance to its farther neighbour among the sorted
/// observations, the prior's centre and the range's ends (the first and last take their inner
/// neighbour's distance), clipped to `[range / min(100, 1 + kernels), range]`.
fn sigmas(obs: &[f64], low: f64, high: f64, step: f64) -> Vec<f64> {
    let prior = 0.5 * (low + high);
    let mut with_prior: Vec<(f64, usize)> = obs.iter().copied().chain([prior]).zip(0..).collect();
    with_prior.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut ends = vec![low - step / 2.0];
    ends.extend(with_prior.iter().map(|p| p.0));
    ends.push(high + step / 2.0);
    let n = with_prior.len();
    let mut sorted: Vec<f64> = (1..=n)
        .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
        .collect();
    if ends.len() >= 4 {
        sorted[0] = ends[2] - ends[1];
        sorted[n - 1] = ends[n] - ends[n - 1];
    }
    let range = high - low + step;
    let kernels = obs.len() + 1;
    let min = range / (1.0 + kernels as f64).min(100.0);
    let mut out = vec![0.0; n];
    for (s, (_, original)) in sorted.iter().zip(&with_prior) {
        out[*original] = s.clamp(min, range);
    }
    out.truncate(obs.len());
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
        // Observations 0.2 and 0.9 on [0, 1] with the prior at 0.5: sorted 0.2, 0.5, 0.9 with
        // ends 0 and 1. Distances to the farther neighbour: 0.3 (but the first takes its inner
        // one, 0.3), 0.4, and the last its inner one, 0.4; clipped to [1/4, 1].
        let s = sigmas(&[0.9, 0.2], 0.0, 1.0, 0.0);
        assert_eq!(s.len(), 2);
        assert!(
            (s[0] - 0.4).abs() < 1e-12 && (s[1] - 0.3).abs() < 1e-12,
            "{s:?}"
        );
        // One observation: min sigma 1/3.
        let s = sigmas(&[0.5], 0.0, 1.0, 0.0);
        assert!((s[0] - 1.0 / 3.0).abs() < 1e-12, "{s:?}");
        assert_eq!(gamma(9), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(1000), 25);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && w[4] == 1.0 && w[29] == 1.0);
    }

    #[test]
    fn densities_integrate_to_one() {
        let d = Distribution::Uniform(0.0, 2.0);
        let p = Parzen::new(&d, &[0.1, 1.7, 1.0], 1.0);
        let n = 20_000;
        let h = 2.0 / n as f64;
        let total: f64 = (0..n)
            .map(|i| p.log_pdf((i as f64 + 0.5) * h).exp() * h)
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
        let p = Parzen::new(&Distribution::Int(1, 5), &[2.0, 2.0, 5.0], 1.0);
        let total: f64 = (1..=5).map(|i| p.log_pdf(i as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        let c = Distribution::Choice(vec![1.into(), 2.into(), 3.into()]);
        let p = Parzen::new(&c, &[0.0, 2.0], 1.0);
        let total: f64 = (0..3).map(|i| p.log_pdf(i as f64).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
    }
}
