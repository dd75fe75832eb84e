//! Range checks for numeric settings, whose errors name the field, the allowed range and
//! the value (`optim.momentum must be in [0, 1), got 1.5`). NaN and infinities never pass.

/// One end of an allowed interval.
#[derive(Clone, Copy, Debug)]
pub enum End {
    /// The end itself is excluded.
    Open(f64),
    /// The end itself is allowed.
    Closed(f64),
    /// No limit on this side (the value must still be finite).
    Unbounded,
}

use End::{Closed, Open, Unbounded};

/// `field` must lie between `lo` and `hi`.
pub fn in_range(field: &str, x: f64, lo: End, hi: End) -> Result<(), String> {
    let above = match lo {
        Open(a) => x > a,
        Closed(a) => x >= a,
        Unbounded => true,
    };
    let below = match hi {
        Open(b) => x < b,
        Closed(b) => x <= b,
        Unbounded => true,
    };
    if x.is_finite() && above && below {
        return Ok(());
    }
    let rule = match (lo, hi) {
        (Open(0.0), Unbounded) => "positive".to_string(),
        (Open(a), Unbounded) => format!("> {a}"),
        (Closed(a), Unbounded) => format!(">= {a}"),
        (Unbounded, Open(b)) => format!("< {b}"),
        (Unbounded, Closed(b)) => format!("<= {b}"),
        (Unbounded, Unbounded) => "finite".to_string(),
        (lo, hi) => {
            let (l, a) = match lo {
                Open(a) => ('(', a),
                Closed(a) => ('[', a),
                Unbounded => unreachable!("matched above"),
            };
            let (h, b) = match hi {
                Open(b) => (')', b),
                Closed(b) => (']', b),
                Unbounded => unreachable!("matched above"),
            };
            format!("in {l}{a}, {b}{h}")
        }
    };
    Err(format!("{field} must be {rule}, got {x}"))
}

/// `field` must be > 0 and finite.
pub fn positive(field: &str, x: f64) -> Result<(), String> {
    in_range(field, x, Open(0.0), Unbounded)
}

/// `field` must be >= 0 and finite.
pub fn non_negative(field: &str, x: f64) -> Result<(), String> {
    in_range(field, x, Closed(0.0), Unbounded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_field_range_and_value_and_refuse_nan() {
        assert!(in_range("m", 0.0, Closed(0.0), Open(1.0)).is_ok());
        assert_eq!(
            in_range("optim.momentum", 1.0, Closed(0.0), Open(1.0)).unwrap_err(),
            "optim.momentum must be in [0, 1), got 1"
        );
        assert_eq!(
            in_range("g", 0.0, Open(0.0), Closed(1.0)).unwrap_err(),
            "g must be in (0, 1], got 0"
        );
        assert_eq!(
            positive("eps", -1.0).unwrap_err(),
            "eps must be positive, got -1"
        );
        assert_eq!(
            non_negative("wd", -0.5).unwrap_err(),
            "wd must be >= 0, got -0.5"
        );
        assert!(non_negative("wd", 0.0).is_ok());
        for bad in [f64::NAN, f64::INFINITY] {
            assert!(positive("x", bad).is_err());
            assert!(in_range("x", bad, Unbounded, Unbounded).is_err());
        }
    }
}
