//! The arithmetic of isolation analysis: Pearson correlation of per-second
//! series, aligned on the seconds both series have.

use super::Series;

/// Pearson's r of two equally long samples; `None` with fewer than three
/// points or when either side is constant (r is undefined then).
pub fn pearson(xs: &[f64], ys: &[f64]) -> Option<f64> {
    let n = xs.len().min(ys.len());
    if n < 3 {
        return None;
    }
    let (xs, ys) = (&xs[..n], &ys[..n]);
    let mean_x = xs.iter().sum::<f64>() / n as f64;
    let mean_y = ys.iter().sum::<f64>() / n as f64;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (x, y) in xs.iter().zip(ys) {
        let (dx, dy) = (x - mean_x, y - mean_y);
        sxy += dx * dy;
        sxx += dx * dx;
        syy += dy * dy;
    }
    if sxx <= f64::EPSILON || syy <= f64::EPSILON {
        return None;
    }
    Some((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// The mean latencies of two series on the seconds both have, restricted to
/// `from..to` (seconds since measurement start).
pub fn aligned_means(a: &Series, b: &Series, from: u32, to: u32) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.t.len() && j < b.t.len() {
        match a.t[i].cmp(&b.t[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                let t = a.t[i];
                if t >= from && t < to && a.requests[i] > a.errors[i] && b.requests[j] > b.errors[j]
                {
                    xs.push(a.mean_ms[i]);
                    ys.push(b.mean_ms[j]);
                }
                i += 1;
                j += 1;
            }
        }
    }
    (xs, ys)
}

/// A tenant's mean latency against another's request count per second, over
/// the seconds the first has (a missing second of the second counts as 0).
pub fn latency_against_load(latency: &Series, load: &Series) -> (Vec<f64>, Vec<f64>) {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (i, t) in latency.t.iter().enumerate() {
        if latency.requests[i] <= latency.errors[i] {
            continue;
        }
        let requests = load.t.binary_search(t).map_or(0, |j| load.requests[j]);
        xs.push(latency.mean_ms[i]);
        ys.push(f64::from(requests));
    }
    (xs, ys)
}

/// The median of some values (`None` when empty).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pearson_of_linear_series_is_one() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        assert!((pearson(&xs, &[2.0, 4.0, 6.0, 8.0]).expect("r") - 1.0).abs() < 1e-12);
        assert!((pearson(&xs, &[8.0, 6.0, 4.0, 2.0]).expect("r") + 1.0).abs() < 1e-12);
        assert_eq!(pearson(&xs, &[1.0, 1.0, 1.0, 1.0]), None);
        assert_eq!(pearson(&[1.0, 2.0], &[1.0, 2.0]), None);
        let r = pearson(&[1.0, 2.0, 3.0, 4.0, 5.0], &[2.0, 1.0, 4.0, 3.0, 5.0]).expect("r");
        assert!((r - 0.8).abs() < 1e-12, "{r}");
    }

    fn series(t: &[u32], mean: &[f64], requests: &[u32]) -> Series {
        Series {
            t: t.to_vec(),
            requests: requests.to_vec(),
            errors: vec![0; t.len()],
            mean_ms: mean.to_vec(),
            p99_ms: mean.to_vec(),
        }
    }

    #[test]
    fn series_align_on_common_seconds_within_the_window() {
        let a = series(&[0, 1, 2, 3, 5], &[1.0, 2.0, 3.0, 4.0, 6.0], &[1; 5]);
        let b = series(&[1, 2, 4, 5], &[10.0, 20.0, 40.0, 50.0], &[1; 4]);
        assert_eq!(
            aligned_means(&a, &b, 0, 10),
            (vec![2.0, 3.0, 6.0], vec![10.0, 20.0, 50.0])
        );
        assert_eq!(aligned_means(&a, &b, 2, 5), (vec![3.0], vec![20.0]));
        let (lat, load) = latency_against_load(&a, &b);
        assert_eq!(lat.len(), 5);
        assert_eq!(load, vec![0.0, 1.0, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
