//! A sampled point made into a train config, checked as a run would check it.

use rekindle_train::TrainConfig;

use crate::space::Assignment;

/// Why a sampled point cannot run: recorded with the trial, which then costs nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// The base config (a TOML table) with every key of `point` set, parsed and validated exactly
/// as `rekindle-train` does before a run.
pub fn trial_config(base: &toml::Table, point: &Assignment) -> Result<TrainConfig, Invalid> {
    let mut table = base.clone();
    if let Some(name) = point.get("optim.name") {
        // A point that switches the optimiser starts from the new one's defaults, as
        // `rekindle-train run --optimizer` does: SGD's momentum in the base must not make an
        // AdamW point invalid.
        let mut optim = toml::Table::new();
        optim.insert("name".into(), name.clone());
        let kind = parse(toml::Table::from_iter([("optim".into(), optim.into())]))
            .map_err(Invalid)?
            .optim
            .name;
        let mut cfg = parse(table).map_err(Invalid)?;
        cfg.optim = cfg.optim.switched_to(kind);
        table = toml::Table::try_from(&cfg).map_err(|e| Invalid(e.to_string()))?;
    }
    for (key, value) in point {
        set(&mut table, key, value.clone()).map_err(Invalid)?;
    }
    let config = parse(table).map_err(Invalid)?;
    config.validate().map_err(|e| Invalid(e.to_string()))?;
    Ok(config)
}

/// A train config from a TOML table, unvalidated; the error is serde's message, naming the key.
pub(crate) fn parse(table: toml::Table) -> Result<TrainConfig, String> {
    toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| e.message().trim().to_string())
}

/// Sets the dotted `key` in `table`, making the tables on the way.
pub(crate) fn set(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<(), String> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().filter(|p| !p.is_empty());
    let Some(last) = last else {
        return Err(format!("{key}: not a dotted key"));
    };
    let mut at = table;
    for part in parts {
        let next = at
            .entry(part)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = next
            .as_table_mut()
            .ok_or_else(|| format!("{key}: {part} is a value, not a section"))?;
    }
    at.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(pairs: &[(&str, toml::Value)]) -> Assignment {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    #[test]
    fn a_point_overrides_the_base_and_leaves_the_rest() {
        let base: toml::Table = toml::from_str("[train]\nepochs = 3\nlr = 0.01\n").expect("base");
        let p = point(&[
            ("train.lr", toml::Value::Float(0.05)),
            ("optim.name", toml::Value::String("sgd".into())),
            ("optim.momentum", toml::Value::Float(0.9)),
        ]);
        let config = trial_config(&base, &p).expect("valid");
        assert_eq!(config.train.lr, 0.05);
        assert_eq!(config.train.epochs, 3);
        assert_eq!(config.optim.momentum, Some(0.9));
    }

    #[test]
    fn a_point_switching_the_optimiser_drops_the_bases_own_options() {
        let base: toml::Table = toml::from_str(
            "[optim]\nname = \"sgd\"\nmomentum = 0.9\nweight_decay = 1e-4\nclip_grad_norm = 1.0\n",
        )
        .expect("base");
        let adamw = point(&[("optim.name", toml::Value::String("adamw".into()))]);
        let config = trial_config(&base, &adamw).expect("momentum is dropped, not refused");
        assert_eq!(config.optim.momentum, None);
        assert_eq!(config.optim.weight_decay, None, "AdamW's own default");
        assert_eq!(
            config.optim.clip_grad_norm,
            Some(1.0),
            "shared options stay"
        );
        let sgd = point(&[("optim.name", toml::Value::String("sgd".into()))]);
        let config = trial_config(&base, &sgd).expect("same optimiser");
        assert_eq!(
            config.optim.momentum,
            Some(0.9),
            "kept when the optimiser stays"
        );
        // The default config's SGD (momentum 0.9) is the base when [optim] is not written.
        let config = trial_config(&toml::Table::new(), &adamw).expect("adamw");
        assert_eq!(config.optim.momentum, None);
    }

    #[test]
    fn an_impossible_point_is_invalid_with_the_train_configs_own_reason() {
        let base = toml::Table::new();
        let too_high = point(&[("train.lr", toml::Value::Float(3.0))]);
        let err = trial_config(&base, &too_high).expect_err("lr 3");
        assert!(err.0.contains("train.lr"), "{err}");
        let unknown = point(&[("train.learning_rate", toml::Value::Float(0.1))]);
        let err = trial_config(&base, &unknown).expect_err("unknown key");
        assert!(err.0.contains("learning_rate"), "{err}");
        let under_value = point(&[("train.lr.x", toml::Value::Float(0.1))]);
        let base: toml::Table = toml::from_str("[train]\nlr = 0.01\n").expect("base");
        let err = trial_config(&base, &under_value).expect_err("lr is a value");
        assert!(err.0.contains("lr is a value"), "{err}");
    }
}
