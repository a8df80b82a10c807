//! Summary statistics of the final test errors of a variant's seeds.

/// Mean, sample standard deviation, median and range of n values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (divides by n − 1); `None` for a single value.
    pub std: Option<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `values`, `None` when there are none. Non-finite values are left out.
    pub fn of(values: &[f64]) -> Option<Self> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let std = (n > 1).then(|| {
            let ss: f64 = sorted.iter().map(|v| (v - mean).powi(2)).sum();
            (ss / (n - 1) as f64).sqrt()
        });
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Self {
            n,
            mean,
            std,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_values() {
        // mean = 33.0 / 5 = 6.6; squared deviations .01 + .01 + 0 + .16 + .16 = .34;
        // sample variance .34 / 4 = .085, std = 0.291548
        let s = Summary::of(&[6.5, 6.7, 6.6, 7.0, 6.2]).unwrap();
        assert_eq!(s.n, 5);
        assert!((s.mean - 6.6).abs() < 1e-12);
        assert!((s.std.unwrap() - 0.085f64.sqrt()).abs() < 1e-12);
        assert_eq!((s.median, s.min, s.max), (6.6, 6.2, 7.0));
    }

    #[test]
    fn even_count_median_is_the_middle_mean() {
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert_eq!(s.mean, 2.5);
    }

    #[test]
    fn one_value_has_no_std_and_none_has_no_summary() {
        let s = Summary::of(&[7.5]).unwrap();
        assert_eq!((s.mean, s.median, s.std), (7.5, 7.5, None));
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[f64::NAN]), None);
    }
}
