//! Beta samples for Thompson sampling: Beta(a, b) = X / (X + Y) with X ~ Gamma(a), Y ~
//! Gamma(b), Gamma by Marsaglia and Tsang (2000), normals by Box–Muller. Written here (forty
//! lines) rather than pulled in from a distributions crate for one function.

use rand::Rng;

/// Rejection rounds before giving up on a Gamma sample (the expected number is about 1.03).
const GAMMA_ROUNDS_MAX: u32 = 64;

fn standard_normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Gamma(shape, 1) for `shape > 0`.
fn gamma<R: Rng + ?Sized>(rng: &mut R, shape: f64) -> f64 {
    if shape < 1.0 {
        // Gamma(a) = Gamma(a + 1) · U^(1/a).
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    for _ in 0..GAMMA_ROUNDS_MAX {
        let x = standard_normal(rng);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u: f64 = rng.random_range(f64::EPSILON..1.0);
        let x2 = x * x;
        if u < 1.0 - 0.0331 * x2 * x2 || u.ln() < 0.5 * x2 + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
    // Practically unreachable; the mode keeps the sample sensible.
    d
}

/// A sample of Beta(a, b), `a, b > 0`.
pub fn beta<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    let x = gamma(rng, a);
    let y = gamma(rng, b);
    if x + y > 0.0 { x / (x + y) } else { 0.5 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn beta_samples_have_the_right_mean_and_spread() {
        let mut rng = StdRng::seed_from_u64(7);
        for (a, b) in [(1.0, 1.0), (30.0, 10.0), (0.5, 0.5), (900.0, 20.0)] {
            let n = 20_000;
            let xs: Vec<f64> = (0..n).map(|_| beta(&mut rng, a, b)).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            let want_mean = a / (a + b);
            let want_var = a * b / ((a + b).powi(2) * (a + b + 1.0));
            assert!((mean - want_mean).abs() < 0.01, "Beta({a},{b}) mean {mean}");
            assert!(
                (var - want_var).abs() < 0.1 * want_var + 1e-5,
                "Beta({a},{b}) var {var} want {want_var}"
            );
        }
    }
}
