//! The point of each new trial, from the sampler the study names: every draw is seeded by the
//! study's seed and the trial's number, so a study proposes the same points whichever worker
//! claims which trial (TPE also depends on the trials finished by then).

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::space::Assignment;
use crate::store::Trial;
use crate::study::{SamplerName, Study};
use crate::tpe::Tpe;

/// How many trials the study can hold: its budget, or fewer points in a grid.
pub fn budget(study: &Study) -> usize {
    let trials = study.section.trials;
    match study.section.sampler {
        SamplerName::Grid => study.space.grid().map_or(trials, |g| g.len().min(trials)),
        _ => trials,
    }
}

/// The point of trial `id`, given the study's `trials` so far.
pub fn propose(study: &Study, trials: &[Trial], id: usize) -> Result<Assignment, String> {
    let seed = study.section.seed;
    let space = &study.space;
    let mut rng = StdRng::seed_from_u64(mix(seed, id as u64));
    match study.section.sampler {
        SamplerName::Random => space.sample(&mut rng),
        SamplerName::Sobol => {
            let index = u32::try_from(id).map_err(|_| "too many trials for Sobol".to_string())?;
            space.sobol(index, mix(seed, 0) as u32)
        }
        SamplerName::Grid => space
            .grid()?
            .get(id)
            .cloned()
            .ok_or_else(|| format!("trial {id} is past the grid's last point")),
        SamplerName::Tpe => {
            let maximize = study.section.objective.maximize();
            Tpe::default().propose(space, trials, maximize, &mut rng)
        }
    }
}

/// SplitMix64 of `seed` and `n`: independent streams per trial from one seed.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
