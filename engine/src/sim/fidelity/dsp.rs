//! The signal processing behind the fidelity analyzer: the tone fits that take one or two
//! sines out of a window, the Goertzel DFT at a single frequency, and small linear solvers.
//!
//! Nothing here allocates: every function works in the caller's buffers.

/// Σ(x·w)²: by Parseval, Σ_k |X_k|² / N over every bin of the windowed DFT.
pub(super) fn windowed_power(x: &[f64], w: &[f64]) -> f64 {
    x.iter().zip(w).map(|(x, w)| (x * w) * (x * w)).sum()
}

/// The DFT of `x` (unwindowed) at `cycles` per sample.
pub(super) fn goertzel_plain(x: &[f64], cycles: f64) -> Complex {
    let omega = std::f64::consts::TAU * cycles;
    let (mut re, mut im) = (0.0, 0.0);
    // A rotating phasor: one complex multiply per sample, no trigonometry in the loop.
    let (c, s) = (omega.cos(), -omega.sin());
    let (mut pr, mut pi) = (1.0f64, 0.0f64);
    for &v in x {
        re += v * pr;
        im += v * pi;
        let t = pr * c - pi * s;
        pi = pr * s + pi * c;
        pr = t;
    }
    Complex { re, im }
}

/// Fits `a·cos(ωn) + b·sin(ωn) + c` to `x` by least squares weighted with `w`, and writes
/// `x` minus the fit into `out`.
pub(super) fn fit_and_remove(x: &[f64], w: &[f64], cycles: f64, out: &mut [f64]) {
    let omega = std::f64::consts::TAU * cycles;
    let (rc, rs) = (omega.cos(), omega.sin());
    // Normal equations of the weighted fit, in the basis (cos, sin, 1).
    let mut m = [[0.0f64; 3]; 3];
    let mut v = [0.0f64; 3];
    let (mut co, mut si) = (1.0f64, 0.0f64);
    for (&xn, &wn) in x.iter().zip(w) {
        let basis = [co, si, 1.0];
        for i in 0..3 {
            v[i] += wn * xn * basis[i];
            for j in 0..3 {
                m[i][j] += wn * basis[i] * basis[j];
            }
        }
        let t = co * rc - si * rs;
        si = co * rs + si * rc;
        co = t;
    }
    let p = solve3(m, v).unwrap_or([0.0; 3]);
    let (mut co, mut si) = (1.0f64, 0.0f64);
    for (o, &xn) in out.iter_mut().zip(x) {
        *o = xn - (p[0] * co + p[1] * si + p[2]);
        let t = co * rc - si * rs;
        si = co * rs + si * rc;
        co = t;
    }
}

/// Solves `m·p = v` (Cramer's rule); `None` when `m` is singular.
fn solve3(m: [[f64; 3]; 3], v: [f64; 3]) -> Option<[f64; 3]> {
    let det = |a: [[f64; 3]; 3]| -> f64 {
        a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
            - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
            + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0])
    };
    let d = det(m);
    if d.abs() < 1e-300 {
        return None;
    }
    let mut p = [0.0; 3];
    for (k, pk) in p.iter_mut().enumerate() {
        let mut a = m;
        for i in 0..3 {
            a[i][k] = v[i];
        }
        *pk = det(a) / d;
    }
    Some(p)
}

/// Fits `a·cos(ω₁n) + b·sin(ω₁n) + c·cos(ω₂n) + d·sin(ω₂n) + e` to `x` by least squares
/// weighted with `w`, and writes `x` minus the fit into `out`.
#[allow(clippy::needless_range_loop)] // matrix code reads best with indices
pub(super) fn fit_and_remove_two(x: &[f64], w: &[f64], c1: f64, c2: f64, out: &mut [f64]) {
    let (o1, o2) = (std::f64::consts::TAU * c1, std::f64::consts::TAU * c2);
    let (r1c, r1s, r2c, r2s) = (o1.cos(), o1.sin(), o2.cos(), o2.sin());
    let mut m = [[0.0f64; 5]; 5];
    let mut v = [0.0f64; 5];
    let (mut co1, mut si1, mut co2, mut si2) = (1.0f64, 0.0f64, 1.0f64, 0.0f64);
    for (&xn, &wn) in x.iter().zip(w) {
        let basis = [co1, si1, co2, si2, 1.0];
        for i in 0..5 {
            let wb = wn * basis[i];
            v[i] += wb * xn;
            for j in i..5 {
                m[i][j] += wb * basis[j];
            }
        }
        let t = co1 * r1c - si1 * r1s;
        si1 = co1 * r1s + si1 * r1c;
        co1 = t;
        let t = co2 * r2c - si2 * r2s;
        si2 = co2 * r2s + si2 * r2c;
        co2 = t;
    }
    for i in 0..5 {
        for j in 0..i {
            m[i][j] = m[j][i];
        }
    }
    let p = solve(m, v).unwrap_or([0.0; 5]);
    let (mut co1, mut si1, mut co2, mut si2) = (1.0f64, 0.0f64, 1.0f64, 0.0f64);
    for (o, &xn) in out.iter_mut().zip(x) {
        *o = xn - (p[0] * co1 + p[1] * si1 + p[2] * co2 + p[3] * si2 + p[4]);
        let t = co1 * r1c - si1 * r1s;
        si1 = co1 * r1s + si1 * r1c;
        co1 = t;
        let t = co2 * r2c - si2 * r2s;
        si2 = co2 * r2s + si2 * r2c;
        co2 = t;
    }
}

/// Solves `m·p = v` by Gaussian elimination with partial pivoting; `None` when `m` is
/// singular.
#[allow(clippy::needless_range_loop)] // matrix code reads best with indices
fn solve<const K: usize>(mut m: [[f64; K]; K], mut v: [f64; K]) -> Option<[f64; K]> {
    for col in 0..K {
        let piv = (col..K).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[piv][col].is_nan() || m[piv][col].abs() <= 1e-300 {
            return None;
        }
        m.swap(col, piv);
        v.swap(col, piv);
        for r in col + 1..K {
            let f = m[r][col] / m[col][col];
            for c in col..K {
                m[r][c] -= f * m[col][c];
            }
            v[r] -= f * v[col];
        }
    }
    let mut p = [0.0; K];
    for r in (0..K).rev() {
        let s: f64 = (r + 1..K).map(|c| m[r][c] * p[c]).sum();
        p[r] = (v[r] - s) / m[r][r];
    }
    Some(p)
}

/// A complex number, just enough for one DFT bin.
#[derive(Clone, Copy, Debug)]
pub(super) struct Complex {
    re: f64,
    im: f64,
}

impl Complex {
    pub(super) fn norm_sqr(self) -> f64 {
        self.re * self.re + self.im * self.im
    }
    pub(super) fn arg(self) -> f64 {
        self.im.atan2(self.re)
    }
}

/// The DFT of `x·w` at `cycles` per sample (any real frequency, not only a bin), by Goertzel's
/// recurrence: X = Σ x[n]·w[n]·e^{−iωn}.
pub(super) fn goertzel(x: &[f64], w: &[f64], cycles: f64) -> Complex {
    let omega = std::f64::consts::TAU * cycles;
    let coeff = 2.0 * omega.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for (a, b) in x.iter().zip(w) {
        let s = a * b + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    // After N steps: X·e^{iω(N−1)} = s1 − e^{−iω}·s2.
    let re = s1 - omega.cos() * s2;
    let im = omega.sin() * s2;
    let n1 = (x.len() - 1) as f64;
    let (c, s) = ((omega * n1).cos(), (omega * n1).sin());
    // Multiply by e^{−iω(N−1)}.
    Complex {
        re: re * c + im * s,
        im: im * c - re * s,
    }
}

/// `a` wrapped into (−π, π].
pub(super) fn wrap(a: f64) -> f64 {
    let t = std::f64::consts::TAU;
    a - t * ((a + std::f64::consts::PI) / t).floor()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn goertzel_is_the_dft() {
        let n = 64;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7 % 11) as f64) - 5.0).collect();
        let w = vec![1.0; n];
        for k in [0usize, 1, 5, 31] {
            let (mut re, mut im) = (0.0, 0.0);
            for (i, v) in x.iter().enumerate() {
                let a = -std::f64::consts::TAU * (k * i) as f64 / n as f64;
                re += v * a.cos();
                im += v * a.sin();
            }
            let g = goertzel(&x, &w, k as f64 / n as f64);
            assert!((g.re - re).abs() < 1e-9 && (g.im - im).abs() < 1e-9, "{k}");
        }
    }
}
