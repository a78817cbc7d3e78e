//! The dense regression branch at inference: for each kept detection, its anchor's
//! P_ST, P_cam and P_ill from the mesh head (one 1×1 convolution evaluated at one pixel),
//! P_ST decoded, and the mesh placed in the photo by its camera — a few small products per
//! face, nothing for the anchors NMS dropped.

use super::camera::{self, Camera};
use super::decoder::{DecodeScratch, MeshDecoder, OUTPUTS};
use super::{Mesh, CAMERA_PARAMS};
use crate::arch::MeshBranch;
use crate::weights::{NamedTensors, WeightsError};

/// One face's mesh: the canonical topology's 468 vertices placed in the photo.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceMesh {
    /// Per vertex `[x, y, depth]` in image pixels: x and y where the vertex projects, depth
    /// its distance behind the face's centre at the scale of x and y (larger is farther from
    /// the camera).
    pub vertices: Vec<[f32; 3]>,
    /// Per vertex RGB albedo in [0, 1] (the face's colour without the predicted light).
    pub colors: Vec<[f32; 3]>,
}

impl FaceMesh {
    /// The mesh with x scaled by `sx`, y by `sy` and depth by their mean (coordinates of a
    /// resized image back to the original's).
    pub fn scaled(&self, sx: f32, sy: f32) -> FaceMesh {
        let sz = (sx + sy) / 2.0;
        FaceMesh {
            vertices: self
                .vertices
                .iter()
                .map(|v| [v[0] * sx, v[1] * sy, v[2] * sz])
                .collect(),
            colors: self.colors.clone(),
        }
    }

    /// The five landmarks as the mesh places them (left eye, right eye, nose tip, left and
    /// right mouth corner; image-left/right of a frontal face): see [`LANDMARK_VERTICES`].
    pub fn landmarks(&self) -> [[f32; 2]; 5] {
        LANDMARK_VERTICES.map(|ids| {
            let n = ids.len() as f32;
            let sum = ids.iter().fold([0.0, 0.0], |acc, &i| {
                [acc[0] + self.vertices[i][0], acc[1] + self.vertices[i][1]]
            });
            [sum[0] / n, sum[1] / n]
        })
    }

    /// The mesh as a Wavefront OBJ with vertex colours (`v x y z r g b`, read by Blender and
    /// MeshLab): x right, y up, z toward the viewer, in image pixels (y and depth negated
    /// from [`FaceMesh::vertices`] so the face stands upright and faces the viewer).
    pub fn to_obj(&self, triangles: &[[u32; 3]]) -> String {
        use std::fmt::Write;
        let mut s = String::with_capacity(64 * (self.vertices.len() + triangles.len()));
        s.push_str("# RetinaFace dense regression branch: MediaPipe canonical face topology\n");
        for (v, c) in self.vertices.iter().zip(&self.colors) {
            let _ = writeln!(
                s,
                "v {:.3} {:.3} {:.3} {:.4} {:.4} {:.4}",
                v[0], -v[1], -v[2], c[0], c[1], c[2]
            );
        }
        for t in triangles {
            let _ = writeln!(s, "f {} {} {}", t[0] + 1, t[1] + 1, t[2] + 1);
        }
        s
    }
}

/// The mesh's vertices of the five labelled landmarks, in their order (MediaPipe indices):
/// each eye's centre is the mean of its two corners — the subject's right eye (33, 133),
/// image-left in a frontal face, then the left (362, 263) — then the nose tip (1) and the
/// mouth corners, the subject's right (61) then left (291).
pub const LANDMARK_VERTICES: [&[usize]; 5] = [&[33, 133], &[362, 263], &[1], &[61], &[291]];

/// The branch's heads and decoder with their weights.
#[derive(Debug, Clone)]
pub struct BranchNet {
    /// Per head layer: `[cout × cin]` weights and `[cout]` bias.
    heads: Vec<(Vec<f32>, Vec<f32>)>,
    /// Per level, its head layer.
    level_heads: Vec<usize>,
    channels: usize,
    per_anchor: usize,
    decoder: MeshDecoder,
}

impl BranchNet {
    /// The branch of `branch` from `tensors` (`MeshHead.*` and `mesh_decoder.*`).
    pub fn new(branch: &MeshBranch, tensors: &NamedTensors) -> Result<Self, WeightsError> {
        let heads = branch
            .heads
            .iter()
            .map(|spec| crate::model::folded(tensors, spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BranchNet {
            channels: branch.heads.first().map_or(0, |h| h.cin),
            heads,
            level_heads: branch.levels.iter().map(|&(h, _)| h).collect(),
            per_anchor: branch.per_anchor,
            decoder: MeshDecoder::new(&branch.decoder, tensors)?,
        })
    }

    /// The P_ST, P_cam and P_ill of anchor `anchor` of a cell on `level`, from that cell's
    /// context features (`channels` values).
    pub fn params(&self, level: usize, anchor: usize, features: &[f32]) -> Vec<f32> {
        let (w, b) = &self.heads[self.level_heads[level]];
        let rows = anchor * self.per_anchor..(anchor + 1) * self.per_anchor;
        rows.map(|r| {
            let row = &w[r * self.channels..(r + 1) * self.channels];
            b[r] + row.iter().zip(features).map(|(w, x)| w * x).sum::<f32>()
        })
        .collect()
    }

    /// The channels of the context features the heads read.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The mesh of `params` (one anchor's) for an anchor centred at `(cx, cy)` of width and
    /// height `(w, h)`, all in pixels: its crop is the square of side max(w, h) around it.
    pub fn face_mesh(&self, params: &[f32], prior: [f32; 4]) -> FaceMesh {
        self.face_meshes(&[(params, prior)])
            .pop()
            .expect("one mesh per anchor")
    }

    /// [`BranchNet::face_mesh`] of several anchors, decoded together (faster than one by one).
    pub fn face_meshes(&self, anchors: &[(&[f32], [f32; 4])]) -> Vec<FaceMesh> {
        self.face_meshes_with(anchors, &mut DecodeScratch::default())
    }

    /// [`BranchNet::face_meshes`] with the decoder's buffers in `scratch`.
    pub fn face_meshes_with(
        &self,
        anchors: &[(&[f32], [f32; 4])],
        scratch: &mut DecodeScratch,
    ) -> Vec<FaceMesh> {
        let latent = self.decoder.spec().latent;
        let codes: Vec<&[f32]> = anchors.iter().map(|(p, _)| &p[..latent]).collect();
        let raws = self.decoder.decode_many_with(&codes, scratch);
        anchors
            .iter()
            .zip(raws)
            .map(|(&(params, prior), raw)| place(&params[latent..], &raw, prior))
            .collect()
    }
}

/// A decoded mesh (`raw`: 468 × 6) placed by its camera (`camera[..7]`) in the photo, for an
/// anchor `[cx, cy, w, h]` in pixels.
fn place(camera: &[f32], raw: &[f32], [cx, cy, w, h]: [f32; 4]) -> FaceMesh {
    let mesh = Mesh::canonical();
    let mut p = [0f32; CAMERA_PARAMS];
    p.copy_from_slice(&camera[..CAMERA_PARAMS]);
    let side = w.max(h);
    let cam = Camera::new(&p, camera::nominal_focal(mesh, side));
    let centre = cam.centre_depth().max(camera::MIN_DEPTH);
    let mut vertices = Vec::with_capacity(mesh.len());
    let mut colors = Vec::with_capacity(mesh.len());
    for (base, out) in mesh.vertices.iter().zip(raw.chunks_exact(OUTPUTS)) {
        let v = [base[0] + out[0], base[1] + out[1], base[2] + out[2]];
        let q = cam.to_camera(v);
        let [dx, dy] = cam.project(q);
        let depth = (q[2] - centre) * cam.focal / centre;
        vertices.push([cx + dx, cy + dy, depth]);
        colors.push([3, 4, 5].map(|k| (out[k] + 0.5).clamp(0.0, 1.0)));
    }
    FaceMesh { vertices, colors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canonical_mesh() -> FaceMesh {
        let mesh = Mesh::canonical();
        FaceMesh {
            vertices: mesh.vertices.clone(),
            colors: vec![[0.25, 0.5, 1.0]; mesh.len()],
        }
    }

    #[test]
    fn obj_text_has_every_vertex_with_its_colour_and_every_triangle() {
        let mesh = canonical_mesh();
        let triangles = &Mesh::canonical().triangles;
        let obj = mesh.to_obj(triangles);
        let v: Vec<Vec<f32>> = obj
            .lines()
            .filter_map(|l| l.strip_prefix("v "))
            .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
            .collect();
        assert_eq!(v.len(), 468);
        // y and depth negated, colours as given.
        let first = mesh.vertices[0];
        assert_eq!(v[0].len(), 6);
        assert!((v[0][0] - first[0]).abs() < 1e-3 && (v[0][1] + first[1]).abs() < 1e-3);
        assert_eq!(&v[0][3..], &[0.25, 0.5, 1.0]);
        let f: Vec<Vec<usize>> = obj
            .lines()
            .filter_map(|l| l.strip_prefix("f "))
            .map(|l| l.split(' ').map(|x| x.parse().unwrap()).collect())
            .collect();
        assert_eq!(f.len(), 898);
        assert_eq!(f[0], triangles[0].map(|i| i as usize + 1).to_vec());
        assert!(f.iter().flatten().all(|&i| (1..=468).contains(&i)));
    }

    #[test]
    fn landmarks_are_the_named_vertices_and_scaling_maps_them() {
        let mesh = canonical_mesh();
        let lm = mesh.landmarks();
        // Subject's right eye (x < 0) first, then the left; nose tip at x = 0; eyes above
        // the nose above the mouth (y up in the canonical model).
        assert!(lm[0][0] < 0.0 && lm[1][0] > 0.0 && lm[2][0].abs() < 1e-6);
        assert!(
            (lm[0][0] + lm[1][0]).abs() < 1e-5,
            "the eyes mirror each other"
        );
        assert!(lm[0][1] > lm[2][1] && lm[2][1] > lm[3][1]);
        let scaled = mesh.scaled(2.0, 3.0);
        let sl = scaled.landmarks();
        for (a, b) in lm.iter().zip(&sl) {
            assert!((b[0] - 2.0 * a[0]).abs() < 1e-5 && (b[1] - 3.0 * a[1]).abs() < 1e-5);
        }
        assert_eq!(scaled.vertices[5][2], mesh.vertices[5][2] * 2.5);
    }
}
