//! The branch's camera (SPEC §1.7), as the trainer's renderer applies it and as the
//! detector places a face's mesh in the photo: P_cam = [x_c, y_c, z_c, x'_c, y'_c, z'_c, f_c].
//!
//! The mesh's own coordinates are cm, y up, the face looking toward +z. The face is turned
//! by pitch x'_c, yaw y'_c and roll z'_c (radians, R = Rz·Ry·Rx) and seen from a camera at
//! `(10 x_c, 10 y_c, 50 + 10 z_c)` cm looking toward −z. Camera space has x right, y down and
//! depth away from the camera; a point projects to `f (x, y) / depth` from the centre of its
//! anchor's square crop, `f = f₀ exp(f_c)`, with f₀ making the canonical face [`FILL`] of the
//! crop's height at the nominal distance. All zeros is a frontal face filling the crop.

use super::Mesh;

/// The nominal camera distance, cm.
pub const DISTANCE: f32 = 50.0;
/// Camera and light positions are predicted in units of this many cm.
pub const POSITION_UNIT: f32 = 10.0;
/// The fraction of its crop's height the canonical face fills at the nominal camera.
pub const FILL: f32 = 0.9;
/// Depths are clamped to at least this (cm): a point at or behind the camera projects as if
/// just in front of it, never to an infinity.
pub const MIN_DEPTH: f32 = 1e-3;

/// The height of `mesh` (cm), which the nominal focal length frames.
pub fn face_height(mesh: &Mesh) -> f32 {
    let (lo, hi) = mesh
        .vertices
        .iter()
        .fold((f32::MAX, f32::MIN), |(lo, hi), v| {
            (lo.min(v[1]), hi.max(v[1]))
        });
    (hi - lo).max(1e-3)
}

/// The nominal focal length for a crop `side` long (pixels).
pub fn nominal_focal(mesh: &Mesh, side: f32) -> f32 {
    FILL * side * DISTANCE / face_height(mesh)
}

/// R = Rz(roll) · Ry(yaw) · Rx(pitch), row-major.
pub fn rotation(pitch: f32, yaw: f32, roll: f32) -> [[f32; 3]; 3] {
    let (sx, cx) = pitch.sin_cos();
    let (sy, cy) = yaw.sin_cos();
    let (sz, cz) = roll.sin_cos();
    [
        [cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx],
        [sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx],
        [-sy, cy * sx, cy * cx],
    ]
}

/// One face's camera.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Camera {
    rotation: [[f32; 3]; 3],
    position: [f32; 3],
    /// Focal length, pixels.
    pub focal: f32,
}

impl Camera {
    /// The camera of the seven values of P_cam, for a crop whose nominal focal length is
    /// `nominal` pixels.
    pub fn new(p: &[f32; 7], nominal: f32) -> Camera {
        Camera {
            rotation: rotation(p[3], p[4], p[5]),
            position: [
                p[0] * POSITION_UNIT,
                p[1] * POSITION_UNIT,
                p[2] * POSITION_UNIT + DISTANCE,
            ],
            focal: nominal * p[6].exp(),
        }
    }

    /// A model-space point in camera space (x right, y down, depth away from the camera).
    pub fn to_camera(&self, v: [f32; 3]) -> [f32; 3] {
        let r = &self.rotation;
        let turned = r.map(|row| row[0] * v[0] + row[1] * v[1] + row[2] * v[2]);
        let rel = [0, 1, 2].map(|k| turned[k] - self.position[k]);
        [rel[0], -rel[1], -rel[2]]
    }

    /// The depth (cm) of the model's origin, the face's centre.
    pub fn centre_depth(&self) -> f32 {
        self.position[2]
    }

    /// A camera-space point projected: its offset from the crop's centre (pixels).
    pub fn project(&self, p: [f32; 3]) -> [f32; 2] {
        let scale = self.focal / p[2].max(MIN_DEPTH);
        [p[0] * scale, p[1] * scale]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_parameters_frame_the_canonical_face_frontally() {
        let mesh = Mesh::canonical();
        let nominal = nominal_focal(mesh, 64.0);
        let camera = Camera::new(&[0.0; 7], nominal);
        let projected: Vec<[f32; 2]> = mesh
            .vertices
            .iter()
            .map(|&v| camera.project(camera.to_camera(v)))
            .collect();
        let (lo, hi) = projected.iter().fold((f32::MAX, f32::MIN), |(lo, hi), p| {
            (lo.min(p[1]), hi.max(p[1]))
        });
        // 90 % of 64 px at the nominal distance; the nearer points (the nose) a little more.
        assert!(hi - lo > 0.9 * 64.0 * 0.97 && hi - lo < 64.0, "{lo} {hi}");
        // y up in the model is down on screen: the forehead (largest y) projects to the top.
        let top = mesh
            .vertices
            .iter()
            .enumerate()
            .max_by(|a, b| a.1[1].total_cmp(&b.1[1]))
            .map(|(i, _)| i)
            .unwrap();
        assert!((projected[top][1] - lo).abs() < 1e-3);
        // Rotations are orthonormal.
        let r = rotation(0.3, -0.7, 1.1);
        for i in 0..3 {
            for j in 0..3 {
                let dot: f32 = (0..3).map(|k| r[i][k] * r[j][k]).sum();
                assert!((dot - f32::from(u8::from(i == j))).abs() < 1e-6);
            }
        }
    }
}
