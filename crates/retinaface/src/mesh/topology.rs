//! Triangle meshes: the Wavefront OBJ reader, edges and adjacency, and the embedded
//! canonical face.

use std::sync::OnceLock;

/// The canonical face model's OBJ (models/mesh/README.md: source, licence, checksum).
pub const CANONICAL_OBJ: &str = include_str!("../../models/mesh/canonical_face_model.obj");

/// Why a mesh was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeshError {
    /// A record of the OBJ text could not be read.
    #[error("OBJ line {line}: {reason}")]
    Obj { line: usize, reason: String },
    /// The mesh is not usable (no triangles, an index out of range, a repeated vertex).
    #[error("invalid mesh: {0}")]
    Invalid(String),
}

/// A triangle mesh: vertex positions and counter-clockwise triangles (0-based indices).
#[derive(Debug, Clone, PartialEq)]
pub struct Mesh {
    pub vertices: Vec<[f32; 3]>,
    pub triangles: Vec<[u32; 3]>,
}

impl Mesh {
    /// MediaPipe's canonical face: 468 vertices, 898 triangles, centimetres, y up, the face
    /// looking toward +z.
    pub fn canonical() -> &'static Mesh {
        static MESH: OnceLock<Mesh> = OnceLock::new();
        MESH.get_or_init(|| {
            // The embedded file is fixed and parsed by a unit test: it cannot fail.
            Mesh::parse_obj(CANONICAL_OBJ).expect("the embedded face mesh parses")
        })
    }

    /// Read the `v` and `f` records of an OBJ text (other records are ignored). Faces are
    /// triangles written `f a b c`, `f a/t b/t c/t` or `f a/t/n …`, 1-based or negative
    /// (relative) indices.
    pub fn parse_obj(text: &str) -> Result<Mesh, MeshError> {
        let mut vertices = Vec::new();
        let mut triangles = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let err = |reason: String| MeshError::Obj {
                line: n + 1,
                reason,
            };
            let mut fields = line.split_whitespace();
            match fields.next() {
                Some("v") => {
                    let mut p = [0f32; 3];
                    for c in &mut p {
                        let field = fields
                            .next()
                            .ok_or_else(|| err("a vertex needs x y z".into()))?;
                        *c = field
                            .parse::<f32>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| err(format!("{field:?} is not a finite number")))?;
                    }
                    vertices.push(p);
                }
                Some("f") => {
                    let refs: Vec<&str> = fields.collect();
                    if refs.len() != 3 {
                        return Err(err(format!(
                            "faces must be triangles, not {} vertices",
                            refs.len()
                        )));
                    }
                    let mut t = [0u32; 3];
                    for (slot, r) in t.iter_mut().zip(refs) {
                        let index = r.split('/').next().unwrap_or_default();
                        let i: i64 = index
                            .parse()
                            .map_err(|_| err(format!("{r:?} is not a vertex reference")))?;
                        let count = vertices.len() as i64;
                        let zero_based = if i > 0 { i - 1 } else { count + i };
                        if i == 0 || !(0..count).contains(&zero_based) {
                            return Err(err(format!("vertex {i} does not exist ({count} so far)")));
                        }
                        *slot = zero_based as u32;
                    }
                    triangles.push(t);
                }
                _ => {}
            }
        }
        let mesh = Mesh {
            vertices,
            triangles,
        };
        mesh.validate()?;
        Ok(mesh)
    }

    /// Check that the mesh has triangles, its indices are in range and no triangle repeats
    /// a vertex.
    pub fn validate(&self) -> Result<(), MeshError> {
        if self.triangles.is_empty() {
            return Err(MeshError::Invalid("no triangles".into()));
        }
        let n = self.vertices.len() as u32;
        for (k, t) in self.triangles.iter().enumerate() {
            if t.iter().any(|&v| v >= n) {
                return Err(MeshError::Invalid(format!(
                    "triangle {k} refers past {n} vertices"
                )));
            }
            if t[0] == t[1] || t[1] == t[2] || t[0] == t[2] {
                return Err(MeshError::Invalid(format!("triangle {k} repeats a vertex")));
            }
        }
        Ok(())
    }

    /// The number of vertices.
    pub fn len(&self) -> usize {
        self.vertices.len()
    }

    /// Whether the mesh has no vertices.
    pub fn is_empty(&self) -> bool {
        self.vertices.is_empty()
    }

    /// The undirected edges `(a, b)`, `a < b`, sorted.
    pub fn edges(&self) -> Vec<(u32, u32)> {
        let mut edges: Vec<(u32, u32)> = self
            .triangles
            .iter()
            .flat_map(|t| [(t[0], t[1]), (t[1], t[2]), (t[2], t[0])])
            .map(|(a, b)| (a.min(b), a.max(b)))
            .collect();
        edges.sort_unstable();
        edges.dedup();
        edges
    }

    /// Each vertex's neighbours, sorted.
    pub fn adjacency(&self) -> Vec<Vec<u32>> {
        let mut adjacency = vec![Vec::new(); self.len()];
        for (a, b) in self.edges() {
            adjacency[a as usize].push(b);
            adjacency[b as usize].push(a);
        }
        for list in &mut adjacency {
            list.sort_unstable();
        }
        adjacency
    }

    /// The number of connected components of the vertex graph (vertices in no triangle
    /// count as components of their own).
    pub fn components(&self) -> usize {
        let adjacency = self.adjacency();
        let mut seen = vec![false; self.len()];
        let mut components = 0;
        for start in 0..self.len() {
            if seen[start] {
                continue;
            }
            components += 1;
            seen[start] = true;
            let mut stack = vec![start];
            while let Some(v) = stack.pop() {
                for &w in &adjacency[v] {
                    if !std::mem::replace(&mut seen[w as usize], true) {
                        stack.push(w as usize);
                    }
                }
            }
        }
        components
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_face_is_the_documented_disk() {
        let mesh = Mesh::canonical();
        assert_eq!((mesh.len(), mesh.triangles.len()), (468, 898));
        assert_eq!(mesh.edges().len(), 1365);
        assert_eq!(mesh.components(), 1);
        // Euler characteristic of a disk.
        assert_eq!(468 - 1365 + 898, 1);
        // The nose tip (MediaPipe landmark 1) is the front-most point.
        let nose = mesh.vertices[1];
        assert_eq!(nose, [0.0, -1.126865, 7.475604]);
    }

    #[test]
    fn obj_records_are_checked() {
        let ok = Mesh::parse_obj("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/1 -1/1\n").unwrap();
        assert_eq!(ok.triangles, vec![[0, 1, 2]]);
        for (text, wanted) in [
            ("v 0 0\n", "x y z"),
            ("v 0 0 nan\n", "finite"),
            ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3 1\n", "triangles"),
            ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n", "does not exist"),
            ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 0\n", "does not exist"),
            ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 1 2\n", "repeats"),
            ("v 0 0 0\n", "no triangles"),
        ] {
            let e = Mesh::parse_obj(text).unwrap_err().to_string();
            assert!(e.contains(wanted), "{text:?}: {e}");
        }
    }
}
