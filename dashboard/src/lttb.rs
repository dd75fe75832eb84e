//! Downsampling a long curve for the browser: Largest-Triangle-Three-Buckets (Steinarsson,
//! 2013). It keeps the first and last points and, from each bucket between, the real sample
//! that spans the largest triangle with the point kept before it and the next bucket's mean, so
//! spikes survive where a stride or a mean would hide them. Written here: it is a dozen lines,
//! and the crates that offer it pull in a plotting stack.

/// At most `keep` points of `points` (x ascending), chosen by LTTB; non-finite values are left
/// out first. Fewer points than `keep`, or `keep < 3`, come back as they are.
pub fn lttb(points: &[(f64, f64)], keep: usize) -> Vec<(f64, f64)> {
    let p: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let n = p.len();
    if keep >= n || keep < 3 {
        return p;
    }
    let every = (n - 2) as f64 / (keep - 2) as f64;
    let bucket = |i: usize| {
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        start..end.max(start + 1)
    };
    let mut out = Vec::with_capacity(keep);
    out.push(p[0]);
    let mut a = 0;
    for i in 0..keep - 2 {
        let next = if i + 1 < keep - 2 {
            bucket(i + 1)
        } else {
            n - 1..n
        };
        let len = next.len() as f64;
        let (mx, my) = p[next]
            .iter()
            .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x / len, sy + y / len));
        let (ax, ay) = p[a];
        let area = |j: usize| ((ax - mx) * (p[j].1 - ay) - (ax - p[j].0) * (my - ay)).abs();
        let chosen = bucket(i)
            .max_by(|&j, &k| area(j).total_cmp(&area(k)))
            .unwrap_or(a + 1);
        out.push(p[chosen]);
        a = chosen;
    }
    out.push(p[n - 1]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_spike_survives_where_a_stride_would_drop_it() {
        let mut points: Vec<(f64, f64)> = (0..10_000).map(|i| (i as f64, 1.0)).collect();
        points[4_321].1 = 50.0;
        let kept = lttb(&points, 100);
        assert_eq!(kept.len(), 100);
        assert!(kept.contains(&(4_321.0, 50.0)), "{kept:?}");
        assert_eq!((kept[0], kept[99]), (points[0], points[9_999]));
    }

    #[test]
    fn short_curves_and_non_finite_values() {
        let points = [(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)];
        assert_eq!(lttb(&points, 10), vec![(0.0, 1.0), (2.0, 3.0)]);
        assert_eq!(lttb(&[], 10), vec![]);
    }

    proptest! {
        /// Whatever the curve: exactly `keep` real samples, x strictly ascending, ends kept.
        #[test]
        fn keeps_that_many_real_samples_in_order(
            ys in proptest::collection::vec(-1e6f64..1e6, 3..2_000),
            keep in 3usize..300,
        ) {
            let points: Vec<(f64, f64)> = ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect();
            let kept = lttb(&points, keep);
            prop_assert_eq!(kept.len(), keep.min(points.len()));
            prop_assert!(kept.windows(2).all(|w| w[0].0 < w[1].0));
            prop_assert!(kept.iter().all(|p| points[p.0 as usize] == *p));
            prop_assert_eq!(kept[0], points[0]);
            prop_assert_eq!(*kept.last().unwrap(), *points.last().unwrap());
        }
    }
}
