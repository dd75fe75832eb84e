//! Seeded mutations: the generic byte-level ones every fuzzer has (flips, interesting values,
//! truncation, splices), and the structure-aware ones of [`crate::structure`].

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::structure::{INTERESTING, Structure};

/// A mutation engine over one input format; every choice comes from its seed.
pub struct Mutator {
    rng: StdRng,
    structure: Structure,
    /// The longest input it makes (keeps executions fast and memory bounded).
    pub max_len: usize,
}

impl Mutator {
    /// A mutator for inputs of `structure`, seeded.
    pub fn new(seed: u64, structure: Structure) -> Self {
        Self {
            rng: StdRng::seed_from_u64(seed),
            structure,
            max_len: 1 << 20,
        }
    }

    /// The random source, for callers choosing among inputs.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// `input` changed by one to four stacked mutations; `other` is a second input to splice from.
    pub fn mutate(&mut self, input: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = input.to_vec();
        let rounds = self.rng.random_range(1..=4);
        for _ in 0..rounds {
            // Half the time the format's own fields, so mutations get past the first check.
            if self.rng.random_bool(0.5)
                && let Some(changed) = self.structure.mutate(&data, &mut self.rng)
            {
                data = changed;
                continue;
            }
            self.byte_level(&mut data, other);
        }
        data.truncate(self.max_len);
        data
    }

    fn byte_level(&mut self, data: &mut Vec<u8>, other: &[u8]) {
        let rng = &mut self.rng;
        if data.is_empty() {
            data.extend((0..rng.random_range(1..64)).map(|_| rng.random::<u8>()));
            return;
        }
        let len = data.len();
        let at = rng.random_range(0..len);
        match rng.random_range(0..9) {
            0 => data[at] ^= 1 << rng.random_range(0..8),
            1 => data[at] = [0, 0xff, 0x7f, 0x80, b'{', b'"', b'-'][rng.random_range(0..7)],
            2 => {
                let width = [2usize, 4, 8][rng.random_range(0..3)];
                let value = INTERESTING[rng.random_range(0..INTERESTING.len())];
                let bytes = if rng.random_bool(0.5) {
                    value.to_le_bytes()
                } else {
                    value.to_be_bytes()
                };
                let end = (at + width).min(len);
                data[at..end].copy_from_slice(&bytes[..end - at]);
            }
            3 => data.truncate(at),
            4 => {
                let end = rng.random_range(at..=len.min(at + 256));
                data.drain(at..end);
            }
            5 => {
                let end = rng.random_range(at..=len.min(at + 256));
                let chunk = data[at..end].to_vec();
                let to = rng.random_range(0..=len);
                data.splice(to..to, chunk);
            }
            6 => {
                let n = rng.random_range(1..32);
                let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                data.splice(at..at, bytes);
            }
            7 if !other.is_empty() => {
                // Splice: our head, the other input's tail.
                let from = rng.random_range(0..other.len());
                data.truncate(at);
                data.extend_from_slice(&other[from..]);
            }
            _ => {
                let n = rng.random_range(1..=8).min(len - at);
                for b in &mut data[at..at + n] {
                    *b = rng.random();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_makes_the_same_inputs() {
        let input = b"PK\x03\x04 some bytes to mutate, long enough for every kind of change";
        let run = |seed| {
            let mut m = Mutator::new(seed, Structure::Bytes);
            (0..200)
                .map(|_| m.mutate(input, b"other"))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // And it does change things: most outputs differ from the input.
        let changed = run(7).iter().filter(|o| o.as_slice() != input).count();
        assert!(changed > 180, "{changed} of 200 changed");
    }

    #[test]
    fn outputs_stay_under_the_length_cap() {
        let mut m = Mutator::new(1, Structure::Bytes);
        m.max_len = 100;
        let mut data = vec![1u8; 90];
        for _ in 0..500 {
            data = m.mutate(&data, &[2u8; 90]);
            assert!(data.len() <= 100);
        }
    }
}
