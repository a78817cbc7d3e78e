//! The mesh hierarchy of the decoder: coarser meshes made by quadric edge collapse, as in
//! COMA and Neural3DMM. A collapse keeps one end of the edge where it is, so every coarse
//! vertex is a vertex of the finer mesh (down-sampling is a selection); up-sampling places
//! each fine vertex by its barycentric coordinates on the nearest coarse triangle (a kept
//! vertex is its own coarse vertex, weight 1).
//!
//! Collapses follow Garland and Heckbert's quadric error (area-weighted face planes, and
//! planes through the outline perpendicular to its faces so the outline is kept), cheapest
//! first, with ties broken by vertex index: the result is a pure function of the mesh. A
//! collapse is allowed only when it keeps the mesh a manifold of the same topology (the
//! link condition; no interior edge between two outline vertices) and flips no triangle.

use super::topology::{Mesh, MeshError};
use std::collections::HashMap;
use std::sync::OnceLock;

/// The weight of the outline's planes against the faces' own.
const BOUNDARY_WEIGHT: f64 = 100.0;

/// The canonical face's reduction factors: 468 → 117 → 30 vertices.
pub const CANONICAL_FACTORS: [usize; 2] = [4, 4];

/// How a fine vertex is placed from a coarse mesh: three (coarse vertex, weight) pairs, the
/// weights non-negative and summing to 1.
pub type Placement = [(u32, f32); 3];

/// Meshes from fine to coarse, with the maps between consecutive levels.
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    /// `levels[0]` is the original mesh; each next one is coarser.
    pub levels: Vec<Mesh>,
    /// `down[l][i]`: the vertex of `levels[l]` that is vertex `i` of `levels[l + 1]`.
    pub down: Vec<Vec<u32>>,
    /// `up[l][i]`: vertex `i` of `levels[l]` from the vertices of `levels[l + 1]`.
    pub up: Vec<Vec<Placement>>,
}

impl Hierarchy {
    /// Reduce `mesh` level by level, each level to `ceil(n / factor)` vertices.
    pub fn build(mesh: &Mesh, factors: &[usize]) -> Result<Hierarchy, MeshError> {
        mesh.validate()?;
        let mut levels = vec![mesh.clone()];
        let mut down = Vec::new();
        let mut up = Vec::new();
        for &factor in factors {
            let fine = levels.last().cloned().unwrap_or_else(|| mesh.clone());
            if factor < 2 {
                return Err(MeshError::Invalid(format!(
                    "reduction factor {factor} is below 2"
                )));
            }
            let target = fine.len().div_ceil(factor);
            let (coarse, kept) = decimate(&fine, target)?;
            up.push(placements(&fine, &coarse, &kept));
            down.push(kept);
            levels.push(coarse);
        }
        Ok(Hierarchy { levels, down, up })
    }

    /// The canonical face's hierarchy (468, 117 and 30 vertices), computed once.
    pub fn canonical() -> &'static Hierarchy {
        static HIERARCHY: OnceLock<Hierarchy> = OnceLock::new();
        HIERARCHY.get_or_init(|| {
            // A pure function of the embedded mesh, checked by the unit tests.
            Hierarchy::build(Mesh::canonical(), &CANONICAL_FACTORS)
                .expect("the canonical face reduces")
        })
    }

    /// Up-sample per-vertex features (`channels` per vertex, vertex-major) from
    /// `levels[level + 1]` to `levels[level]`.
    pub fn upsample(&self, level: usize, coarse: &[f32], channels: usize) -> Vec<f32> {
        let mut fine = Vec::new();
        self.upsample_into(level, coarse, channels, &mut fine);
        fine
    }

    /// [`Hierarchy::upsample`] into `fine` (overwritten).
    pub fn upsample_into(
        &self,
        level: usize,
        coarse: &[f32],
        channels: usize,
        fine: &mut Vec<f32>,
    ) {
        let placements = &self.up[level];
        fine.clear();
        fine.resize(placements.len() * channels, 0.0);
        for (row, p) in fine.chunks_exact_mut(channels).zip(placements) {
            for &(v, w) in p {
                let src = &coarse[v as usize * channels..(v as usize + 1) * channels];
                for (o, s) in row.iter_mut().zip(src) {
                    *o += w * s;
                }
            }
        }
    }
}

/// A symmetric 4×4 quadric, upper triangle row by row.
type Quadric = [f64; 10];

fn plane_quadric(n: [f64; 3], d: f64, weight: f64) -> Quadric {
    let p = [n[0], n[1], n[2], d];
    let mut q = [0.0; 10];
    let mut k = 0;
    for i in 0..4 {
        for j in i..4 {
            q[k] = weight * p[i] * p[j];
            k += 1;
        }
    }
    q
}

fn add(a: &mut Quadric, b: &Quadric) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// vᵀ Q v for v = (x, y, z, 1).
fn error(q: &Quadric, p: [f64; 3]) -> f64 {
    let v = [p[0], p[1], p[2], 1.0];
    let mut e = 0.0;
    let mut k = 0;
    for i in 0..4 {
        for j in i..4 {
            let term = q[k] * v[i] * v[j];
            e += if i == j { term } else { 2.0 * term };
            k += 1;
        }
    }
    e
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

fn normal(p: &[[f64; 3]], t: [u32; 3]) -> [f64; 3] {
    let [a, b, c] = t.map(|i| p[i as usize]);
    cross(sub(b, a), sub(c, a))
}

/// Each undirected edge with the triangles that hold it.
fn edge_faces(triangles: &[[u32; 3]]) -> HashMap<(u32, u32), Vec<usize>> {
    let mut map: HashMap<(u32, u32), Vec<usize>> = HashMap::new();
    for (k, t) in triangles.iter().enumerate() {
        for (a, b) in [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])] {
            map.entry((a.min(b), a.max(b))).or_default().push(k);
        }
    }
    map
}

/// Collapse edges until `target` vertices remain; the coarse mesh and, for each of its
/// vertices, its index in `mesh`.
fn decimate(mesh: &Mesh, target: usize) -> Result<(Mesh, Vec<u32>), MeshError> {
    let p: Vec<[f64; 3]> = mesh.vertices.iter().map(|v| v.map(f64::from)).collect();
    let mut triangles = mesh.triangles.clone();
    let mut alive = vec![true; p.len()];
    // Vertices in no triangle take no part and are dropped.
    let mut used = vec![false; p.len()];
    triangles
        .iter()
        .flatten()
        .for_each(|&v| used[v as usize] = true);
    alive.iter_mut().zip(&used).for_each(|(a, u)| *a &= u);
    let mut count = alive.iter().filter(|&&a| a).count();

    let mut quadrics = vec![[0.0; 10]; p.len()];
    for t in &triangles {
        let n = normal(&p, *t);
        let area2 = norm(n);
        if area2 > 0.0 {
            let unit = n.map(|c| c / area2);
            let q = plane_quadric(unit, -dot(unit, p[t[0] as usize]), area2 / 2.0);
            t.iter().for_each(|&v| add(&mut quadrics[v as usize], &q));
        }
    }
    for ((a, b), faces) in edge_faces(&triangles) {
        if let [f] = faces[..] {
            let e = sub(p[b as usize], p[a as usize]);
            let m = cross(e, normal(&p, triangles[f]));
            let len = norm(m);
            if len > 0.0 {
                let unit = m.map(|c| c / len);
                let q = plane_quadric(unit, -dot(unit, p[a as usize]), BOUNDARY_WEIGHT * dot(e, e));
                add(&mut quadrics[a as usize], &q);
                add(&mut quadrics[b as usize], &q);
            }
        }
    }

    while count > target {
        let edges = edge_faces(&triangles);
        let mut neighbours: Vec<Vec<u32>> = vec![Vec::new(); p.len()];
        for &(a, b) in edges.keys() {
            neighbours[a as usize].push(b);
            neighbours[b as usize].push(a);
        }
        let mut outline = vec![false; p.len()];
        for (&(a, b), faces) in &edges {
            if faces.len() == 1 {
                outline[a as usize] = true;
                outline[b as usize] = true;
            }
        }
        // (cost, kept, removed), cheapest first, ties by index.
        let mut candidates: Vec<(f64, u32, u32)> = edges
            .keys()
            .flat_map(|&(a, b)| {
                let mut q = quadrics[a as usize];
                add(&mut q, &quadrics[b as usize]);
                [
                    (error(&q, p[a as usize]), a, b),
                    (error(&q, p[b as usize]), b, a),
                ]
            })
            .collect();
        candidates.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
        let chosen = candidates.iter().find(|&&(_, keep, remove)| {
            allowed(&p, &triangles, &edges, &neighbours, &outline, keep, remove)
        });
        let Some(&(_, keep, remove)) = chosen else {
            return Err(MeshError::Invalid(format!(
                "no edge can be collapsed at {count} vertices (target {target})"
            )));
        };
        let q = quadrics[remove as usize];
        add(&mut quadrics[keep as usize], &q);
        for t in &mut triangles {
            t.iter_mut()
                .filter(|v| **v == remove)
                .for_each(|v| *v = keep);
        }
        triangles.retain(|t| t[0] != t[1] && t[1] != t[2] && t[0] != t[2]);
        alive[remove as usize] = false;
        count -= 1;
    }

    let kept: Vec<u32> = (0..p.len() as u32).filter(|&v| alive[v as usize]).collect();
    let mut index = vec![u32::MAX; p.len()];
    kept.iter()
        .enumerate()
        .for_each(|(i, &v)| index[v as usize] = i as u32);
    let coarse = Mesh {
        vertices: kept.iter().map(|&v| mesh.vertices[v as usize]).collect(),
        triangles: triangles
            .iter()
            .map(|t| t.map(|v| index[v as usize]))
            .collect(),
    };
    coarse.validate()?;
    Ok((coarse, kept))
}

/// Whether collapsing `remove` into `keep` keeps the mesh a manifold of the same topology
/// and flips no triangle.
fn allowed(
    p: &[[f64; 3]],
    triangles: &[[u32; 3]],
    edges: &HashMap<(u32, u32), Vec<usize>>,
    neighbours: &[Vec<u32>],
    outline: &[bool],
    keep: u32,
    remove: u32,
) -> bool {
    let Some(faces) = edges.get(&(keep.min(remove), keep.max(remove))) else {
        return false;
    };
    // An interior edge between two outline vertices would pinch the disk.
    if faces.len() == 2 && outline[keep as usize] && outline[remove as usize] {
        return false;
    }
    // Link condition: the common neighbours are exactly the opposite corners.
    let mut opposite: Vec<u32> = faces
        .iter()
        .flat_map(|&f| triangles[f])
        .filter(|&v| v != keep && v != remove)
        .collect();
    opposite.sort_unstable();
    let mut common: Vec<u32> = neighbours[keep as usize]
        .iter()
        .copied()
        .filter(|v| neighbours[remove as usize].contains(v))
        .collect();
    common.sort_unstable();
    if common != opposite {
        return false;
    }
    // No triangle of `remove` that survives may flip or become degenerate.
    triangles.iter().all(|t| {
        if !t.contains(&remove) || t.contains(&keep) {
            return true;
        }
        let before = normal(p, *t);
        let after = normal(p, t.map(|v| if v == remove { keep } else { v }));
        dot(before, after) > 1e-12 * dot(before, before)
    })
}

/// For each vertex of `fine`: itself if it was kept, else its barycentric coordinates on the
/// nearest triangle of `coarse`.
fn placements(fine: &Mesh, coarse: &Mesh, kept: &[u32]) -> Vec<Placement> {
    let mut own = vec![None; fine.len()];
    kept.iter()
        .enumerate()
        .for_each(|(i, &v)| own[v as usize] = Some(i as u32));
    let cp: Vec<[f64; 3]> = coarse.vertices.iter().map(|v| v.map(f64::from)).collect();
    fine.vertices
        .iter()
        .zip(own)
        .map(|(v, own)| {
            if let Some(i) = own {
                return [(i, 1.0), (i, 0.0), (i, 0.0)];
            }
            let q = v.map(f64::from);
            let mut best = (f64::INFINITY, [0u32; 3], [1.0, 0.0, 0.0]);
            for t in &coarse.triangles {
                let [a, b, c] = t.map(|i| cp[i as usize]);
                let w = closest_barycentric(q, a, b, c);
                let x = [0, 1, 2].map(|k| w[0] * a[k] + w[1] * b[k] + w[2] * c[k]);
                let d = dot(sub(q, x), sub(q, x));
                if d < best.0 {
                    best = (d, *t, w);
                }
            }
            let (_, t, w) = best;
            let w = w.map(|x| x as f32);
            // Weights that sum to exactly 1 in f32.
            [(t[0], w[0]), (t[1], w[1]), (t[2], 1.0 - w[0] - w[1])]
        })
        .collect()
}

/// The barycentric coordinates of the point of triangle abc nearest to q (Ericson,
/// Real-Time Collision Detection, 5.1.5): non-negative, summing to 1.
fn closest_barycentric(q: [f64; 3], a: [f64; 3], b: [f64; 3], c: [f64; 3]) -> [f64; 3] {
    let (ab, ac, aq) = (sub(b, a), sub(c, a), sub(q, a));
    let (d1, d2) = (dot(ab, aq), dot(ac, aq));
    if d1 <= 0.0 && d2 <= 0.0 {
        return [1.0, 0.0, 0.0];
    }
    let bq = sub(q, b);
    let (d3, d4) = (dot(ab, bq), dot(ac, bq));
    if d3 >= 0.0 && d4 <= d3 {
        return [0.0, 1.0, 0.0];
    }
    let vc = d1 * d4 - d3 * d2;
    if vc <= 0.0 && d1 >= 0.0 && d3 <= 0.0 {
        let v = d1 / (d1 - d3);
        return [1.0 - v, v, 0.0];
    }
    let cq = sub(q, c);
    let (d5, d6) = (dot(ab, cq), dot(ac, cq));
    if d6 >= 0.0 && d5 <= d6 {
        return [0.0, 0.0, 1.0];
    }
    let vb = d5 * d2 - d1 * d6;
    if vb <= 0.0 && d2 >= 0.0 && d6 <= 0.0 {
        let w = d2 / (d2 - d6);
        return [1.0 - w, 0.0, w];
    }
    let va = d3 * d6 - d5 * d4;
    if va <= 0.0 && (d4 - d3) >= 0.0 && (d5 - d6) >= 0.0 {
        let w = (d4 - d3) / ((d4 - d3) + (d5 - d6));
        return [0.0, 1.0 - w, w];
    }
    let denom = 1.0 / (va + vb + vc);
    let (v, w) = (vb * denom, vc * denom);
    [1.0 - v - w, v, w]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn euler(mesh: &Mesh) -> i64 {
        mesh.len() as i64 - mesh.edges().len() as i64 + mesh.triangles.len() as i64
    }

    #[test]
    fn the_canonical_hierarchy_keeps_a_connected_disk_at_every_level() {
        let h = Hierarchy::canonical();
        assert_eq!(h.levels[0], *Mesh::canonical());
        let sizes: Vec<usize> = h.levels.iter().map(Mesh::len).collect();
        assert_eq!(sizes, [468, 117, 30]);
        for (l, mesh) in h.levels.iter().enumerate() {
            assert_eq!(mesh.components(), 1, "level {l}");
            assert_eq!(euler(mesh), 1, "level {l} is not a disk");
            // Every edge is held by one (outline) or two triangles.
            assert!(
                edge_faces(&mesh.triangles).values().all(|f| f.len() <= 2),
                "level {l}"
            );
            // Triangles keep facing the front (+z) as the original's nearly all do.
            let p: Vec<[f64; 3]> = mesh.vertices.iter().map(|v| v.map(f64::from)).collect();
            let front = mesh
                .triangles
                .iter()
                .filter(|t| normal(&p, **t)[2] > 0.0)
                .count();
            assert!(
                front * 10 >= mesh.triangles.len() * 9,
                "level {l}: {front} front-facing"
            );
        }
        // Coarse vertices are fine vertices at the same place.
        for (l, down) in h.down.iter().enumerate() {
            for (i, &v) in down.iter().enumerate() {
                assert_eq!(
                    h.levels[l + 1].vertices[i],
                    h.levels[l].vertices[v as usize]
                );
            }
        }
    }

    #[test]
    fn up_sampling_weights_are_convex_and_keep_kept_vertices() {
        let h = Hierarchy::canonical();
        for (l, up) in h.up.iter().enumerate() {
            assert_eq!(up.len(), h.levels[l].len());
            for placement in up {
                let sum: f32 = placement.iter().map(|p| p.1).sum();
                assert!((sum - 1.0).abs() < 1e-6, "{sum}");
                assert!(placement.iter().all(|p| p.1 >= -1e-6));
                assert!(placement
                    .iter()
                    .all(|p| (p.0 as usize) < h.levels[l + 1].len()));
            }
            for (i, &v) in h.down[l].iter().enumerate() {
                assert_eq!(up[v as usize][0], (i as u32, 1.0));
            }
            // Up-sampled coarse positions land near the fine ones (the face is ~16 cm wide).
            let coarse: Vec<f32> = h.levels[l + 1].vertices.iter().flatten().copied().collect();
            let fine = h.upsample(l, &coarse, 3);
            let errors: Vec<f32> = fine
                .chunks_exact(3)
                .zip(&h.levels[l].vertices)
                .map(|(a, b)| (0..3).map(|k| (a[k] - b[k]).powi(2)).sum::<f32>().sqrt())
                .collect();
            let mean = errors.iter().sum::<f32>() / errors.len() as f32;
            assert!(
                mean < 0.5 * (l + 1) as f32,
                "level {l}: mean error {mean} cm"
            );
        }
    }

    #[test]
    fn building_is_deterministic_and_refuses_bad_factors() {
        let mesh = Mesh::canonical();
        assert_eq!(
            Hierarchy::build(mesh, &CANONICAL_FACTORS).unwrap(),
            *Hierarchy::canonical()
        );
        assert!(Hierarchy::build(mesh, &[1]).is_err());
    }

    #[test]
    fn closest_points_on_a_triangle() {
        let (a, b, c) = ([0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
        assert_eq!(
            closest_barycentric([0.25, 0.25, 3.0], a, b, c),
            [0.5, 0.25, 0.25]
        );
        assert_eq!(
            closest_barycentric([-1.0, -1.0, 0.0], a, b, c),
            [1.0, 0.0, 0.0]
        );
        assert_eq!(
            closest_barycentric([0.5, -2.0, 0.0], a, b, c),
            [0.5, 0.5, 0.0]
        );
        let w = closest_barycentric([1.0, 1.0, 0.0], a, b, c);
        assert!((w[1] - 0.5).abs() < 1e-12 && (w[2] - 0.5).abs() < 1e-12 && w[0].abs() < 1e-12);
    }
}
