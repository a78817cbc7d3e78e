//! Chebyshev graph convolution (Defferrard et al.; COMA's mesh decoder) on a mesh level's
//! scaled Laplacian L̃ = 2L/λmax − I, with L = I − D^(−1/2) A D^(−1/2) the normalised
//! Laplacian and λmax its largest eigenvalue, computed (power iteration) rather than
//! assumed to be 2.
//!
//! For features X (n × Fin) and weights Θ_k (Fin × Fout), k < K:
//! T_0 = X, T_1 = L̃X, T_k = 2L̃T_(k−1) − T_(k−2), and Y = Σ_k T_k Θ_k + b.

/// A sparse n × n matrix in compressed rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Sparse {
    pub n: usize,
    pub row_start: Vec<usize>,
    pub cols: Vec<u32>,
    pub values: Vec<f32>,
}

impl Sparse {
    /// Y = M X for X of `channels` columns (row-major).
    pub fn multiply(&self, x: &[f32], channels: usize) -> Vec<f32> {
        let mut y = vec![0f32; self.n * channels];
        self.multiply_into(x, channels, &mut y);
        y
    }

    /// Y = M X into `y` (`n × channels`, overwritten).
    pub fn multiply_into(&self, x: &[f32], channels: usize, y: &mut [f32]) {
        y.fill(0.0);
        for (i, out) in y.chunks_exact_mut(channels).enumerate() {
            for k in self.row_start[i]..self.row_start[i + 1] {
                let (j, v) = (self.cols[k] as usize, self.values[k]);
                for (o, s) in out.iter_mut().zip(&x[j * channels..(j + 1) * channels]) {
                    *o += v * s;
                }
            }
        }
    }

    /// The dense matrix, row-major (tests and export).
    pub fn dense(&self) -> Vec<f32> {
        let mut m = vec![0f32; self.n * self.n];
        for i in 0..self.n {
            for k in self.row_start[i]..self.row_start[i + 1] {
                m[i * self.n + self.cols[k] as usize] += self.values[k];
            }
        }
        m
    }
}

/// The largest eigenvalue of the normalised Laplacian of a graph given by its adjacency
/// lists: power iteration in f64 from a fixed start, to a relative change below 1e-13.
pub fn largest_eigenvalue(adjacency: &[Vec<u32>]) -> f64 {
    let n = adjacency.len();
    if n == 0 {
        return 0.0;
    }
    let inv_sqrt = inverse_sqrt_degrees(adjacency);
    let apply = |x: &[f64]| -> Vec<f64> {
        (0..n)
            .map(|i| {
                if adjacency[i].is_empty() {
                    return 0.0;
                }
                let s: f64 = adjacency[i]
                    .iter()
                    .map(|&j| inv_sqrt[j as usize] * x[j as usize])
                    .sum();
                x[i] - inv_sqrt[i] * s
            })
            .collect()
    };
    // A start with a component along every eigenvector in practice: alternating signs
    // (the top of a bipartite graph's spectrum) plus an irregular ramp.
    let mut x: Vec<f64> = (0..n)
        .map(|i| if i % 2 == 0 { 1.0 } else { -1.0 } + 0.01 * ((i * 7919) % 101) as f64)
        .collect();
    let mut lambda = 0.0;
    for _ in 0..100_000 {
        let norm = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        x.iter_mut().for_each(|v| *v /= norm);
        let y = apply(&x);
        let next: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        x = y;
        if (next - lambda).abs() <= 1e-13 * next.abs() {
            return next;
        }
        lambda = next;
    }
    lambda
}

/// D^(−1/2) of a graph: 1/√degree per vertex, 0 for an isolated one.
fn inverse_sqrt_degrees(adjacency: &[Vec<u32>]) -> Vec<f64> {
    adjacency
        .iter()
        .map(|a| {
            if a.is_empty() {
                0.0
            } else {
                1.0 / (a.len() as f64).sqrt()
            }
        })
        .collect()
}

/// L̃ = 2L/λmax − I of a graph, with λmax.
pub fn scaled_laplacian(adjacency: &[Vec<u32>]) -> (Sparse, f64) {
    let lambda = largest_eigenvalue(adjacency);
    let scale = if lambda > 0.0 { 2.0 / lambda } else { 0.0 };
    let inv_sqrt = inverse_sqrt_degrees(adjacency);
    let mut m = Sparse {
        n: adjacency.len(),
        row_start: vec![0],
        cols: Vec::new(),
        values: Vec::new(),
    };
    for (i, neighbours) in adjacency.iter().enumerate() {
        let mut row: Vec<(u32, f64)> = neighbours
            .iter()
            .map(|&j| (j, -scale * inv_sqrt[i] * inv_sqrt[j as usize]))
            .collect();
        let diagonal = if neighbours.is_empty() { 0.0 } else { scale };
        row.push((i as u32, diagonal - 1.0));
        row.sort_by_key(|e| e.0);
        for (j, v) in row {
            m.cols.push(j);
            m.values.push(v as f32);
        }
        m.row_start.push(m.cols.len());
    }
    (m, lambda)
}

/// One Chebyshev convolution layer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChebConv {
    /// The order K (K = 1: a per-vertex linear layer).
    pub order: usize,
    pub inputs: usize,
    pub outputs: usize,
    /// Θ, K × inputs × outputs, row-major.
    pub weight: Vec<f32>,
    /// b, `outputs`.
    pub bias: Vec<f32>,
}

impl ChebConv {
    /// Y = Σ_k T_k(L̃) X Θ_k + b for X of `inputs` channels per vertex.
    pub fn forward(&self, laplacian: &Sparse, x: &[f32]) -> Vec<f32> {
        let n = laplacian.n;
        debug_assert_eq!(x.len(), n * self.inputs);
        let mut y: Vec<f32> = (0..n).flat_map(|_| self.bias.iter().copied()).collect();
        let mut previous: Vec<f32> = Vec::new();
        let mut current = x.to_vec();
        for k in 0..self.order {
            if k == 1 {
                previous = std::mem::replace(&mut current, laplacian.multiply(x, self.inputs));
            } else if k > 1 {
                let mut next = laplacian.multiply(&current, self.inputs);
                next.iter_mut()
                    .zip(&previous)
                    .for_each(|(t, p)| *t = 2.0 * *t - p);
                previous = std::mem::replace(&mut current, next);
            }
            let theta =
                &self.weight[k * self.inputs * self.outputs..(k + 1) * self.inputs * self.outputs];
            for (row, t) in y
                .chunks_exact_mut(self.outputs)
                .zip(current.chunks_exact(self.inputs))
            {
                for (c, &tc) in t.iter().enumerate() {
                    let w = &theta[c * self.outputs..(c + 1) * self.outputs];
                    row.iter_mut().zip(w).for_each(|(o, wv)| *o += tc * wv);
                }
            }
        }
        y
    }
}

/// Σ_k T_k(L̃) Z_k by Clenshaw's recurrence: b_k = Z_k + 2 L̃ b_(k+1) − b_(k+2) from k = K−1
/// down to 1, then Z_0 + L̃ b_1 − b_2. It is the same polynomial as the forward recurrence
/// with K − 1 products by L̃, but the products act on Z's channels (a layer's outputs)
/// rather than X's inputs: with Z_k = X Θ_k computed first, a layer that halves the
/// channels halves the sparse work too.
///
/// `z` is `[K, n, width]`: the K blocks one after the other, each vertex-major with `width`
/// values per vertex (e.g. every face's channels); the result is `[n, width]`.
pub fn clenshaw(laplacian: &Sparse, z: &[f32], order: usize, width: usize) -> Vec<f32> {
    clenshaw_into(laplacian, z, order, width, &mut ClenshawBuffers::default()).to_vec()
}

/// The buffers [`clenshaw_into`] reuses from call to call.
#[derive(Debug, Clone, Default)]
pub struct ClenshawBuffers {
    b1: Vec<f32>,
    b2: Vec<f32>,
    product: Vec<f32>,
}

impl ClenshawBuffers {
    /// Bytes held by the buffers (their capacity).
    pub fn bytes(&self) -> usize {
        4 * (self.b1.capacity() + self.b2.capacity() + self.product.capacity())
    }
}

/// [`clenshaw`] in `buffers`; the result borrows them.
pub fn clenshaw_into<'a>(
    laplacian: &Sparse,
    z: &[f32],
    order: usize,
    width: usize,
    buffers: &'a mut ClenshawBuffers,
) -> &'a [f32] {
    let size = laplacian.n * width;
    debug_assert_eq!(z.len(), order * size);
    let block = |k: usize| &z[k * size..(k + 1) * size];
    let ClenshawBuffers { b1, b2, product } = buffers;
    // b1 = b_(k+1), b2 = b_(k+2); b_(K−1) = Z_(K−1) as b_K = b_(K+1) = 0.
    b1.clear();
    b1.extend_from_slice(block(order - 1));
    b2.clear();
    b2.resize(size, 0.0);
    product.resize(size, 0.0);
    for k in (0..order - 1).rev() {
        // The new b_k overwrites b_(k+2), then the names shift; the last step (k = 0)
        // takes L̃ b_1 once, not twice.
        let twice = if k == 0 { 1.0 } else { 2.0 };
        laplacian.multiply_into(b1, width, product);
        for ((b, &p), &zk) in b2.iter_mut().zip(product.iter()).zip(block(k)) {
            *b = zk + twice * p - *b;
        }
        std::mem::swap(b1, b2);
    }
    b1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::hierarchy::Hierarchy;

    fn cycle(n: u32) -> Vec<Vec<u32>> {
        (0..n).map(|i| vec![(i + n - 1) % n, (i + 1) % n]).collect()
    }

    fn complete(n: u32) -> Vec<Vec<u32>> {
        (0..n)
            .map(|i| (0..n).filter(|&j| j != i).collect())
            .collect()
    }

    #[test]
    fn largest_eigenvalues_of_known_graphs() {
        // Normalised Laplacians: a bipartite graph's spectrum reaches 2, K_n's is n/(n−1),
        // an odd cycle's top is 1 − cos(2π⌊n/2⌋/n).
        assert!((largest_eigenvalue(&cycle(6)) - 2.0).abs() < 1e-9);
        assert!((largest_eigenvalue(&complete(3)) - 1.5).abs() < 1e-9);
        assert!((largest_eigenvalue(&complete(5)) - 1.25).abs() < 1e-9);
        let odd = 1.0 - (2.0 * std::f64::consts::PI * 2.0 / 5.0).cos();
        assert!((largest_eigenvalue(&cycle(5)) - odd).abs() < 1e-9);
    }

    /// The dense L̃ built independently: 2(I − D^(−1/2) A D^(−1/2))/λ − I.
    fn dense_reference(adjacency: &[Vec<u32>], lambda: f64) -> Vec<f64> {
        let n = adjacency.len();
        let mut m = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                let a = f64::from(u8::from(adjacency[i].contains(&(j as u32))));
                let d = (adjacency[i].len() as f64 * adjacency[j].len() as f64).sqrt();
                let l = f64::from(u8::from(i == j)) - a / d;
                m[i * n + j] = 2.0 * l / lambda - f64::from(u8::from(i == j));
            }
        }
        m
    }

    #[test]
    fn the_scaled_laplacian_of_each_level_is_the_dense_formula_with_its_spectrum_in_range() {
        for mesh in &Hierarchy::canonical().levels {
            let adjacency = mesh.adjacency();
            let (l, lambda) = scaled_laplacian(&adjacency);
            assert!(lambda > 1.0 && lambda <= 2.0, "{lambda}");
            let reference = dense_reference(&adjacency, lambda);
            for (a, b) in l.dense().iter().zip(&reference) {
                assert!((f64::from(*a) - b).abs() < 1e-6);
            }
            // λ is an eigenvalue: ‖L̃v − v‖ is small for the top eigenvector, i.e. the
            // spectrum of L̃ reaches 1 and no further (power iteration on L̃ + I).
            let n = mesh.len();
            let mut v: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
            for _ in 0..3000 {
                let mut w = l.multiply(&v, 1);
                w.iter_mut().zip(&v).for_each(|(a, b)| *a += b);
                let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
                v = w.iter().map(|x| x / norm).collect();
            }
            let lv = l.multiply(&v, 1);
            let rayleigh: f32 = lv.iter().zip(&v).map(|(a, b)| a * b).sum();
            assert!(
                (rayleigh - 1.0).abs() < 1e-3,
                "top of L̃'s spectrum {rayleigh}"
            );
        }
    }

    fn layer(order: usize, inputs: usize, outputs: usize) -> ChebConv {
        let value = |i: usize| ((i * 2654435761) % 1000) as f32 / 500.0 - 1.0;
        ChebConv {
            order,
            inputs,
            outputs,
            weight: (0..order * inputs * outputs).map(value).collect(),
            bias: (0..outputs).map(|i| value(i + 7)).collect(),
        }
    }

    /// Σ_k T_k(L̃) X Θ_k + b with T_k as dense matrices from the recurrence.
    fn dense_forward(conv: &ChebConv, l: &[f64], n: usize, x: &[f32]) -> Vec<f64> {
        let matmul = |a: &[f64], b: &[f64]| -> Vec<f64> {
            let mut c = vec![0f64; n * n];
            for i in 0..n {
                for k in 0..n {
                    for j in 0..n {
                        c[i * n + j] += a[i * n + k] * b[k * n + j];
                    }
                }
            }
            c
        };
        let identity: Vec<f64> = (0..n * n)
            .map(|i| f64::from(u8::from(i % (n + 1) == 0)))
            .collect();
        let mut t = vec![identity.clone(), l.to_vec()];
        while t.len() < conv.order {
            let k = t.len();
            let next: Vec<f64> = matmul(l, &t[k - 1])
                .iter()
                .zip(&t[k - 2])
                .map(|(a, b)| 2.0 * a - b)
                .collect();
            t.push(next);
        }
        let (fi, fo) = (conv.inputs, conv.outputs);
        let mut y = vec![0f64; n * fo];
        for i in 0..n {
            for o in 0..fo {
                let mut s = f64::from(conv.bias[o]);
                for (k, tk) in t.iter().enumerate().take(conv.order) {
                    for j in 0..n {
                        for c in 0..fi {
                            s += tk[i * n + j]
                                * f64::from(x[j * fi + c])
                                * f64::from(conv.weight[(k * fi + c) * fo + o]);
                        }
                    }
                }
                y[i * fo + o] = s;
            }
        }
        y
    }

    #[test]
    fn chebyshev_convolution_equals_the_dense_polynomial() {
        let mesh = &Hierarchy::canonical().levels[2];
        let n = mesh.len();
        let (l, lambda) = scaled_laplacian(&mesh.adjacency());
        let dense = dense_reference(&mesh.adjacency(), lambda);
        let x: Vec<f32> = (0..n * 3)
            .map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0)
            .collect();
        for order in [1, 2, 3, 6] {
            let conv = layer(order, 3, 4);
            let y = conv.forward(&l, &x);
            let reference = dense_forward(&conv, &dense, n, &x);
            for (a, b) in y.iter().zip(&reference) {
                assert!(
                    (f64::from(*a) - b).abs() < 1e-4 * (1.0 + b.abs()),
                    "K={order}: {a} vs {b}"
                );
            }
        }
        // K = 1 is a per-vertex linear layer: a vertex's output ignores its neighbours.
        let conv = layer(1, 3, 4);
        let mut moved = x.clone();
        moved[0] += 1.0;
        let (a, b) = (conv.forward(&l, &x), conv.forward(&l, &moved));
        assert!(a[4..] == b[4..] && a[..4] != b[..4]);
        // K = 2 reaches the neighbours once: a vertex two edges away is unchanged.
        let conv = layer(2, 3, 4);
        let (a, b) = (conv.forward(&l, &x), conv.forward(&l, &moved));
        let adjacency = mesh.adjacency();
        for v in 0..n {
            let near = v == 0 || adjacency[0].contains(&(v as u32));
            assert_eq!(
                a[v * 4..v * 4 + 4] != b[v * 4..v * 4 + 4],
                near,
                "vertex {v}"
            );
        }
    }
    #[test]
    fn clenshaw_sums_the_same_polynomial_as_the_forward_recurrence() {
        let hierarchy = crate::mesh::hierarchy::Hierarchy::canonical();
        let (laplacian, _) = scaled_laplacian(&hierarchy.levels[2].adjacency());
        let n = laplacian.n;
        for order in [1, 2, 3, 6] {
            let (inputs, outputs, groups) = (5, 3, 2);
            let conv = layer(order, inputs, outputs);
            let xs: Vec<Vec<f32>> = (0..groups)
                .map(|g| {
                    (0..n * inputs)
                        .map(|i| ((i * 7 + g * 3) % 11) as f32 / 11.0 - 0.5)
                        .collect()
                })
                .collect();
            // Z_k = X Θ_k, laid out [order, n, groups, outputs].
            let mut z = vec![0f32; n * groups * order * outputs];
            for (g, x) in xs.iter().enumerate() {
                for v in 0..n {
                    for k in 0..order {
                        for o in 0..outputs {
                            z[((k * n + v) * groups + g) * outputs + o] = (0..inputs)
                                .map(|i| {
                                    x[v * inputs + i] * conv.weight[(k * inputs + i) * outputs + o]
                                })
                                .sum();
                        }
                    }
                }
            }
            let y = clenshaw(&laplacian, &z, order, groups * outputs);
            for (g, x) in xs.iter().enumerate() {
                let reference = conv.forward(&laplacian, x);
                for v in 0..n {
                    for o in 0..outputs {
                        let got = y[(v * groups + g) * outputs + o] + conv.bias[o];
                        let want = reference[v * outputs + o];
                        assert!((got - want).abs() < 1e-5, "K {order}: {got} vs {want}");
                    }
                }
            }
        }
    }
}
