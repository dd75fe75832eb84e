//! Command-line names read as the config reads them (`[table] key = "name"`), so both accept the
//! same spellings and refuse anything else with the list of valid ones.

use crate::TrainConfig;
use crate::catalog::optim::OptimizerKind;
use crate::catalog::prune::PruneScope;
use crate::catalog::schedule::ScheduleKind;
use crate::config::{DataKind, Strategy};

/// A closed set's name read by its own `FromStr` (aliases and the list of valid names).
pub fn parse_name<T: std::str::FromStr<Err: std::fmt::Display>>(s: &str) -> Result<T, String> {
    s.parse().map_err(|e: T::Err| e.to_string())
}

/// A dataset layout (`data.kind`).
pub fn parse_kind(s: &str) -> Result<DataKind, String> {
    TrainConfig::from_toml(&format!("[data]\nkind = \"{s}\""))
        .map(|c| c.data.kind)
        .map_err(|_| {
            format!("unknown data kind `{s}`; valid ones: folder, manifest, fashion-mnist")
        })
}

/// A fine-tuning strategy (`train.strategy`).
pub fn parse_strategy(s: &str) -> Result<Strategy, String> {
    TrainConfig::from_toml(&format!("[train]\nstrategy = \"{s}\""))
        .map(|c| c.train.strategy)
        .map_err(|_| {
            format!(
                "unknown strategy `{s}`; valid ones: full, feature-extraction, partial, gradual"
            )
        })
}

/// A command-line name read as the config reads `[table] key = "name"`, so both accept the
/// same spellings; anything else is an error naming `what` and listing `names`.
fn parse_as_config<T>(
    s: &str,
    what: &str,
    table: &str,
    key: &str,
    names: &str,
    pick: fn(TrainConfig) -> T,
) -> Result<T, String> {
    TrainConfig::from_toml(&format!("[{table}]\n{key} = \"{s}\""))
        .map(pick)
        .map_err(|_| format!("unknown {what} `{s}`; valid ones: {names}"))
}

/// An optimiser (`optim.name`).
pub fn parse_optimizer(s: &str) -> Result<OptimizerKind, String> {
    parse_as_config(s, "optimizer", "optim", "name", OptimizerKind::NAMES, |c| {
        c.optim.name
    })
}

/// A learning-rate schedule (`schedule.name`).
pub fn parse_schedule(s: &str) -> Result<ScheduleKind, String> {
    parse_as_config(
        s,
        "schedule",
        "schedule",
        "name",
        ScheduleKind::NAMES,
        |c| c.schedule.name,
    )
}

/// A pruning scope (`prune.scope`).
pub fn parse_scope(s: &str) -> Result<PruneScope, String> {
    parse_as_config(s, "pruning scope", "prune", "scope", "global, layer", |c| {
        c.prune.scope
    })
}
