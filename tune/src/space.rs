//! The search space: dotted train-config keys, each with a distribution and optional conditions.

use std::collections::BTreeMap;

use rand::Rng;
use serde::Deserialize;

/// One sampled point: dotted key -> value, only the keys whose conditions held.
pub type Assignment = BTreeMap<String, toml::Value>;

/// Where a parameter's values come from.
#[derive(Clone, Debug, PartialEq)]
pub enum Distribution {
    /// Uniform on `[low, high)`.
    Uniform(f64, f64),
    /// Log-uniform on `[low, high)`, `0 < low`.
    LogUniform(f64, f64),
    /// An integer in `low..=high`, each equally likely.
    Int(i64, i64),
    /// One of these values, each equally likely.
    Choice(Vec<toml::Value>),
}

impl Distribution {
    /// A value drawn from `rng`.
    pub fn sample(&self, rng: &mut impl Rng) -> toml::Value {
        self.at(rng.random::<f64>())
    }

    /// The value at `u` in `[0, 1)` of the distribution's quantile function: how a uniform
    /// draw, random or quasi-random, becomes a value.
    pub fn at(&self, u: f64) -> toml::Value {
        let u = u.clamp(0.0, 1.0);
        // The bin of `u` among `n` equal ones (u = 1.0 falls in the last).
        let bin = |n: usize| ((u * n as f64) as usize).min(n - 1);
        match self {
            Self::Uniform(lo, hi) => toml::Value::Float(lo + (hi - lo) * u),
            Self::LogUniform(lo, hi) => {
                let (a, b) = (lo.ln(), hi.ln());
                toml::Value::Float((a + (b - a) * u).exp())
            }
            Self::Int(lo, hi) => {
                let n = usize::try_from(hi.abs_diff(*lo))
                    .ok()
                    .and_then(|d| d.checked_add(1))
                    .unwrap_or(usize::MAX);
                toml::Value::Integer(lo.saturating_add_unsigned(bin(n) as u64))
            }
            Self::Choice(values) => values[bin(values.len())].clone(),
        }
    }

    /// Whether it yields one value only (a range of width 0, one choice).
    pub fn single(&self) -> bool {
        match self {
            Self::Uniform(lo, hi) | Self::LogUniform(lo, hi) => lo == hi,
            Self::Int(lo, hi) => lo == hi,
            Self::Choice(values) => values.len() == 1,
        }
    }

    /// Values of every shape this distribution yields: each choice, or the lower bound.
    pub fn shapes(&self) -> Vec<toml::Value> {
        match self {
            Self::Uniform(lo, _) | Self::LogUniform(lo, _) => vec![toml::Value::Float(*lo)],
            Self::Int(lo, _) => vec![toml::Value::Integer(*lo)],
            Self::Choice(values) => values.clone(),
        }
    }
}

/// A searched key: its distribution, and the values other searched keys must have for it to
/// be sampled at all (`when = { "optim.name" = "sgd" }`).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(try_from = "RawParam")]
pub struct Param {
    /// Where its values come from.
    pub distribution: Distribution,
    /// Searched key -> the value it must have.
    pub when: BTreeMap<String, toml::Value>,
}

impl Param {
    /// Whether `point` meets every condition, so that this key is searched there.
    pub fn applies(&self, point: &Assignment) -> bool {
        self.when.iter().all(|(dep, v)| point.get(dep) == Some(v))
    }
}

/// A parameter as written: exactly one of the distribution keys, plus `when`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawParam {
    uniform: Option<[f64; 2]>,
    log_uniform: Option<[f64; 2]>,
    int: Option<[i64; 2]>,
    choice: Option<Vec<toml::Value>>,
    #[serde(default)]
    when: BTreeMap<String, toml::Value>,
}

impl TryFrom<RawParam> for Param {
    type Error = String;

    fn try_from(raw: RawParam) -> Result<Self, String> {
        let range = |name: &str, [lo, hi]: [f64; 2], positive: bool| {
            if lo.is_finite() && hi.is_finite() && (!positive || lo > 0.0) && lo < hi {
                Ok((lo, hi))
            } else {
                let rule = if positive {
                    "0 < low < high"
                } else {
                    "low < high"
                };
                Err(format!("{name} = [{lo}, {hi}] needs {rule}, both finite"))
            }
        };
        let mut given = Vec::new();
        if let Some(r) = raw.uniform {
            let (lo, hi) = range("uniform", r, false)?;
            given.push(Distribution::Uniform(lo, hi));
        }
        if let Some(r) = raw.log_uniform {
            let (lo, hi) = range("log-uniform", r, true)?;
            given.push(Distribution::LogUniform(lo, hi));
        }
        if let Some([lo, hi]) = raw.int {
            if lo > hi {
                return Err(format!("int = [{lo}, {hi}] needs low <= high"));
            }
            given.push(Distribution::Int(lo, hi));
        }
        if let Some(values) = raw.choice {
            if values.is_empty() {
                return Err("choice = [] needs at least one value".into());
            }
            given.push(Distribution::Choice(values));
        }
        match <[Distribution; 1]>::try_from(given) {
            Ok([distribution]) => Ok(Self {
                distribution,
                when: raw.when,
            }),
            Err(_) => Err("give exactly one of uniform, log-uniform, int, choice".into()),
        }
    }
}

/// `[space]`: dotted train-config key -> parameter.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct Space(pub BTreeMap<String, Param>);

impl Space {
    /// The keys in an order where every key comes after those its conditions name, or an error
    /// naming a condition on an unsearched key or a cycle.
    pub fn order(&self) -> Result<Vec<&str>, String> {
        for (key, param) in &self.0 {
            for (dep, value) in &param.when {
                let Some(p) = self.0.get(dep) else {
                    return Err(format!("{key}: `when` names {dep}, which is not searched"));
                };
                if let Distribution::Choice(values) = &p.distribution
                    && !values.contains(value)
                {
                    return Err(format!("{key}: `when` wants {dep} = {value}, not a choice"));
                }
            }
        }
        let mut order: Vec<&str> = Vec::new();
        while order.len() < self.0.len() {
            let ready = self.0.iter().find(|(key, param)| {
                !order.contains(&key.as_str())
                    && param.when.keys().all(|dep| order.contains(&dep.as_str()))
            });
            match ready {
                Some((key, _)) => order.push(key),
                None => return Err("the `when` conditions form a cycle".into()),
            }
        }
        Ok(order)
    }

    /// One point: each key in [`Space::order`] whose conditions hold, drawn from `rng`.
    pub fn sample(&self, rng: &mut impl Rng) -> Result<Assignment, String> {
        let mut point = Assignment::new();
        for key in self.order()? {
            let param = &self.0[key];
            if param.applies(&point) {
                point.insert(key.to_string(), param.distribution.sample(rng));
            }
        }
        Ok(point)
    }

    /// Point `index` of a scrambled Sobol sequence seeded by `seed`: key `i` of
    /// [`Space::order`] takes dimension `i`, so the first `2^k` points spread evenly over
    /// every key. A key whose conditions fail leaves its dimension unused.
    pub fn sobol(&self, index: u32, seed: u32) -> Result<Assignment, String> {
        let order = self.order()?;
        if order.len() > sobol_burley::NUM_DIMENSIONS as usize {
            let max = sobol_burley::NUM_DIMENSIONS;
            return Err(format!("a Sobol study searches at most {max} keys"));
        }
        let mut point = Assignment::new();
        for (dim, key) in order.into_iter().enumerate() {
            let param = &self.0[key];
            if param.applies(&point) {
                let u = sobol_burley::sample(index, dim as u32, seed) as f64;
                point.insert(key.to_string(), param.distribution.at(u));
            }
        }
        Ok(point)
    }

    /// Every point of a space of choices and integer ranges, each once, in a fixed order: a
    /// conditional key is varied only in the points where its conditions hold. An error names
    /// a continuous key, which has no grid.
    pub fn grid(&self) -> Result<Vec<Assignment>, String> {
        let mut points = vec![Assignment::new()];
        for key in self.order()? {
            let param = &self.0[key];
            let values: Vec<toml::Value> = match &param.distribution {
                Distribution::Choice(values) => values.clone(),
                Distribution::Int(lo, hi) => (*lo..=*hi).map(toml::Value::Integer).collect(),
                _ => return Err(format!("{key}: a grid needs choice or int, not a range")),
            };
            points = points
                .into_iter()
                .flat_map(|point| {
                    if param.applies(&point) {
                        let with = |v: &toml::Value| {
                            let mut p = point.clone();
                            p.insert(key.to_string(), v.clone());
                            p
                        };
                        values.iter().map(with).collect()
                    } else {
                        vec![point]
                    }
                })
                .collect();
        }
        Ok(points)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn space(text: &str) -> Result<Space, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    const SPACE: &str = r#"
        "train.lr" = { log-uniform = [1e-4, 1e-1] }
        "optim.name" = { choice = ["sgd", "adamw"] }
        "optim.momentum" = { uniform = [0.8, 0.99], when = { "optim.name" = "sgd" } }
        "train.batch_size" = { choice = [8, 16, 32] }
        "train.epochs" = { int = [2, 5] }
    "#;

    #[test]
    fn a_conditional_key_is_sampled_exactly_when_its_condition_holds() {
        let space = space(SPACE).expect("space");
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen = [0; 2];
        for _ in 0..200 {
            let point = space.sample(&mut rng).expect("sample");
            let sgd = point["optim.name"].as_str() == Some("sgd");
            assert_eq!(point.contains_key("optim.momentum"), sgd, "{point:?}");
            seen[sgd as usize] += 1;
        }
        assert!(
            seen.iter().all(|&n| n > 50),
            "both branches drawn: {seen:?}"
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_points() {
        let space = space(SPACE).expect("space");
        let draw = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..20)
                .map(|_| space.sample(&mut rng).expect("sample"))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(3), draw(3));
        assert_ne!(draw(3), draw(4));
    }

    #[test]
    fn malformed_parameters_are_refused_with_the_reason() {
        let cases = [
            (r#"k = { uniform = [1.0, 0.5] }"#, "low < high"),
            (r#"k = { log-uniform = [0.0, 1.0] }"#, "low < high"),
            (r#"k = { int = [3, 1] }"#, "low <= high"),
            (r#"k = { choice = [] }"#, "at least one"),
            (
                r#"k = { uniform = [0.0, 1.0], int = [1, 2] }"#,
                "exactly one",
            ),
            (r#"k = { when = { a = 1 } }"#, "exactly one"),
            (r#"k = { normal = [0.0, 1.0] }"#, "unknown field"),
        ];
        for (text, want) in cases {
            let err = space(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        let unsearched = space(r#"k = { int = [1, 2], when = { a = 1 } }"#).expect("parses");
        assert!(unsearched.order().expect_err("a").contains("not searched"));
        let impossible = r#"a = { choice = [1, 2] }
            k = { int = [1, 2], when = { a = 3 } }"#;
        let err = space(impossible).expect("parses").order().expect_err("3");
        assert!(err.contains("not a choice"), "{err}");
        let cycle = r#"a = { choice = [1], when = { b = 1 } }
            b = { choice = [1], when = { a = 1 } }"#;
        assert!(
            space(cycle)
                .expect("parses")
                .order()
                .expect_err("cycle")
                .contains("cycle")
        );
    }

    #[test]
    fn a_grid_holds_each_combination_once_and_varies_conditional_keys_only_where_they_apply() {
        let space = space(
            r#"
            "optim.name" = { choice = ["sgd", "adamw"] }
            "optim.nesterov" = { choice = [true, false], when = { "optim.name" = "sgd" } }
            "train.epochs" = { int = [2, 4] }
        "#,
        )
        .expect("space");
        let grid = space.grid().expect("grid");
        // sgd: 2 nesterov x 3 epochs; adamw: 3 epochs.
        assert_eq!(grid.len(), 9);
        let unique: std::collections::BTreeSet<String> =
            grid.iter().map(|p| format!("{p:?}")).collect();
        assert_eq!(unique.len(), grid.len());
        for point in &grid {
            let sgd = point["optim.name"].as_str() == Some("sgd");
            assert_eq!(point.contains_key("optim.nesterov"), sgd, "{point:?}");
        }
        let continuous = self::space(r#""train.lr" = { uniform = [0.1, 0.2] }"#).expect("space");
        assert!(continuous.grid().expect_err("range").contains("train.lr"));
    }

    #[test]
    fn the_first_sobol_points_fill_every_keys_strata_once() {
        let space = space(
            r#"
            a = { uniform = [0.0, 1.0] }
            b = { uniform = [0.0, 1.0] }
            c = { uniform = [0.0, 1.0] }
        "#,
        )
        .expect("space");
        for seed in [0, 7] {
            let points: Vec<Assignment> = (0..16)
                .map(|i| space.sobol(i, seed).expect("point"))
                .collect();
            for key in ["a", "b", "c"] {
                let mut bins: Vec<usize> = points
                    .iter()
                    .map(|p| (p[key].as_float().expect("float") * 16.0) as usize)
                    .collect();
                bins.sort();
                assert_eq!(bins, (0..16).collect::<Vec<_>>(), "{key}, seed {seed}");
            }
        }
        assert_eq!(space.sobol(3, 7), space.sobol(3, 7));
        assert_ne!(space.sobol(3, 7), space.sobol(3, 8));
    }

    #[test]
    fn quantiles_cover_each_integer_and_choice_equally() {
        let int = Distribution::Int(-2, 1);
        let got: Vec<_> = [0.0, 0.24, 0.25, 0.5, 0.99, 1.0]
            .map(|u| int.at(u))
            .to_vec();
        let want = [-2, -2, -1, 0, 1, 1].map(toml::Value::Integer).to_vec();
        assert_eq!(got, want);
        let choice = Distribution::Choice(vec![toml::Value::Boolean(true), false.into()]);
        assert_eq!(choice.at(0.49), toml::Value::Boolean(true));
        assert_eq!(choice.at(0.5), toml::Value::Boolean(false));
        let wide = Distribution::Int(i64::MIN, i64::MAX);
        assert_eq!(wide.at(0.0), toml::Value::Integer(i64::MIN));
        assert!(wide.at(1.0).as_integer().is_some());
    }

    proptest! {
        /// Every draw lies in its distribution's support, whatever the bounds and seed.
        #[test]
        fn draws_stay_in_bounds(lo in -1e3f64..1e3, width in 1e-6f64..1e3, seed: u64,
                                ilo in -100i64..100, iwidth in 0i64..100) {
            let mut rng = StdRng::seed_from_u64(seed);
            let hi = lo + width;
            let u = Distribution::Uniform(lo, hi).sample(&mut rng).as_float().expect("float");
            prop_assert!(lo <= u && u < hi);
            let (plo, phi) = (lo.abs() + 1e-6, lo.abs() + 1e-6 + width);
            let l = Distribution::LogUniform(plo, phi).sample(&mut rng).as_float().expect("float");
            prop_assert!(plo * (1.0 - 1e-12) <= l && l <= phi * (1.0 + 1e-12));
            let i = Distribution::Int(ilo, ilo + iwidth).sample(&mut rng).as_integer();
            prop_assert!(i.is_some_and(|i| ilo <= i && i <= ilo + iwidth));
        }
    }
}
