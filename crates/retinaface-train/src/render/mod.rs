//! The differentiable renderer of the dense regression branch (SPEC §1.7): a coloured mesh
//! seen by a perspective camera P_cam, shaded by a point light and ambient light P_ill
//! (Lambert, per-vertex normals, Gouraud), drawn into a `size × size` crop.
//!
//! Visibility (which triangle a pixel sees) comes from a z-buffer pass outside autodiff
//! ([`raster`]); everything after it — camera, projection, normals, shading, the pixel's
//! barycentric weights and its interpolated colour — is tensor arithmetic that autodiff
//! differentiates exactly, so gradients reach vertex positions, colours, camera and light.
//! Weights are affine in screen space (no perspective correction: at crop sizes of 32 to
//! 128 pixels the difference is below a pixel). Pixels that no triangle covers are not
//! drawn and take no part in the loss.
//!
//! Coordinates: the mesh's own (cm, y up, the face looking toward +z). The camera sits at
//! `c = (10 x_c, 10 y_c, 50 + 10 z_c)` and looks toward −z; the face is first turned by
//! pitch x'_c, yaw y'_c and roll z'_c (radians, R = Rz·Ry·Rx). Camera space has x right,
//! y down and depth away from the camera; a point projects to
//! `(f x / z + size/2, f y / z + size/2)` with `f = f₀ exp(f_c)`, f₀ making the canonical
//! face 90 % of the crop's height. The light sits at `10 (x_l, y_l, z_l)` cm in camera
//! space (at the camera by default) with colour `½ + (r_l, g_l, b_l)`; ambient light is
//! `½ + (r_a, g_a, b_a)`. A vertex's colour is `albedo ⊙ (ambient + light · max(0, n·l))`.
//! All-zero parameters are a frontal face, lit from the camera, filling the crop.

pub mod fit;
pub mod loss;
pub mod raster;

use crate::network::values;
use burn::tensor::{Device, Int, Tensor, TensorData};
use raster::{rasterize, Fragment};
use retinaface::mesh::Mesh;

pub use retinaface::mesh::camera::{DISTANCE, POSITION_UNIT};
pub use retinaface::mesh::{CAMERA_PARAMS, LIGHT_PARAMS};

impl Rendering {
    /// The renderings as `count` pictures of `size × size`, uncovered pixels black.
    pub fn images(&self, count: usize, size: usize) -> Vec<image::RgbImage> {
        let mut images = vec![image::RgbImage::new(size as u32, size as u32); count];
        let colours = values(self.colours.clone()).unwrap_or_default();
        for (f, rgb) in self.fragments.iter().zip(colours.chunks_exact(3)) {
            if let Some(img) = images.get_mut(f.image as usize) {
                let (x, y) = (f.pixel % size as u32, f.pixel / size as u32);
                let px = rgb
                    .iter()
                    .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8);
                let px: Vec<u8> = px.collect();
                img.put_pixel(x, y, image::Rgb([px[0], px[1], px[2]]));
            }
        }
        images
    }
}

/// A contact sheet: per row, the crop (`[rows, size, size, 3]` in [0, 1], as
/// [`loss::crops`] makes them) beside each column's picture of that row, every picture
/// enlarged `zoom` times (nearest neighbour) so a 64-pixel crop is readable.
pub fn sheet(
    crops: &[f32],
    size: usize,
    columns: &[Vec<image::RgbImage>],
    zoom: u32,
) -> image::RgbImage {
    use image::imageops;
    let rows = crops.len() / (size * size * 3);
    let side = size as u32 * zoom;
    let mut sheet = image::RgbImage::new((1 + columns.len() as u32) * side, rows as u32 * side);
    for (k, crop) in crops.chunks_exact(size * size * 3).enumerate() {
        let mut crop_image = image::RgbImage::new(size as u32, size as u32);
        for (px, rgb) in crop_image.pixels_mut().zip(crop.chunks_exact(3)) {
            *px = image::Rgb([0, 1, 2].map(|c| (rgb[c].clamp(0.0, 1.0) * 255.0).round() as u8));
        }
        let pictures = std::iter::once(&crop_image).chain(columns.iter().filter_map(|c| c.get(k)));
        for (column, picture) in pictures.enumerate() {
            let big = imageops::resize(picture, side, side, imageops::FilterType::Nearest);
            let (x, y) = (column as u32 * side, k as u32 * side);
            imageops::replace(&mut sheet, &big, i64::from(x), i64::from(y));
        }
    }
    sheet
}

/// A renderer for one mesh topology and crop size.
#[derive(Debug, Clone)]
pub struct Renderer {
    size: usize,
    triangles: Vec<[u32; 3]>,
    /// `[vertices, triangles]`: 1 where the vertex is a corner of the triangle.
    incidence: Tensor<2>,
    /// The triangles' corners, `[triangles · 3]`.
    corners: Tensor<1, Int>,
    focal: f32,
}

/// The visible pixels of a batch of renderings and their colours.
#[derive(Debug, Clone)]
pub struct Rendering {
    /// One per visible pixel, rendering by rendering, pixels in raster order.
    pub fragments: Vec<Fragment>,
    /// `[fragments, 3]`, RGB.
    pub colours: Tensor<2>,
}

impl Renderer {
    /// For `mesh`'s triangles, crops of `size` pixels; the nominal focal length makes `mesh`
    /// 90 % of the crop's height at the nominal distance.
    pub fn new(mesh: &Mesh, size: usize, device: &Device) -> Self {
        let (n, t) = (mesh.len(), mesh.triangles.len());
        let mut incidence = vec![0f32; n * t];
        for (k, tri) in mesh.triangles.iter().enumerate() {
            tri.iter()
                .for_each(|&v| incidence[v as usize * t + k] = 1.0);
        }
        let corners: Vec<i64> = mesh
            .triangles
            .iter()
            .flatten()
            .map(|&v| i64::from(v))
            .collect();
        Renderer {
            size,
            triangles: mesh.triangles.clone(),
            incidence: Tensor::from_data(TensorData::new(incidence, vec![n, t]), device),
            corners: Tensor::from_data(TensorData::new(corners, vec![t * 3]), device),
            focal: retinaface::mesh::camera::nominal_focal(mesh, size as f32),
        }
    }

    /// The crop size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Render `[M, n, 3]` model-space vertices with `[M, n, 3]` albedo, `[M, 7]` cameras and
    /// `[M, 9]` lights.
    pub fn render(
        &self,
        vertices: Tensor<3>,
        albedo: Tensor<3>,
        camera: Tensor<2>,
        light: Tensor<2>,
    ) -> Rendering {
        let (points, focal) = self.to_camera(vertices, camera);
        let screen = self.project(points.clone(), focal);
        let colours = self.shade(points, albedo, light);
        self.draw(screen, colours)
    }

    /// Model space → camera space `[M, n, 3]`, with each rendering's focal length `[M]`.
    pub fn to_camera(&self, vertices: Tensor<3>, camera: Tensor<2>) -> (Tensor<3>, Tensor<1>) {
        let [m, n, _] = vertices.dims();
        let p = |k: usize| camera.clone().narrow(1, k, 1).reshape([m]);
        let rotation = rotation(p(3), p(4), p(5)); // [M, 3, 3]
        let turned = vertices.matmul(rotation.swap_dims(1, 2));
        let position = Tensor::stack::<2>(
            vec![
                p(0) * POSITION_UNIT,
                p(1) * POSITION_UNIT,
                p(2) * POSITION_UNIT + DISTANCE,
            ],
            1,
        );
        let relative = turned - position.reshape([m, 1, 3]);
        // Looking toward −z with y down: (x, −y, −z).
        let flip = Tensor::<1>::from_data(
            TensorData::new(vec![1f32, -1.0, -1.0], vec![3]),
            &relative.device(),
        );
        let points = relative * flip.reshape([1, 1, 3]);
        let focal = p(6).exp() * self.focal;
        debug_assert_eq!(points.dims(), [m, n, 3]);
        (points, focal)
    }

    /// Camera space → `[M, n, 3]` (x, y, depth) in crop pixels.
    pub fn project(&self, points: Tensor<3>, focal: Tensor<1>) -> Tensor<3> {
        let [m, n, _] = points.dims();
        let depth = points.clone().narrow(2, 2, 1).clamp_min(1e-3);
        let scale = focal.reshape([m, 1, 1]) / depth.clone();
        let xy = points.narrow(2, 0, 2) * scale + self.size as f32 / 2.0;
        let screen = Tensor::cat(vec![xy, depth], 2);
        debug_assert_eq!(screen.dims(), [m, n, 3]);
        screen
    }

    /// Per-vertex colours `[M, n, 3]`: albedo under the ambient and the point light.
    pub fn shade(&self, points: Tensor<3>, albedo: Tensor<3>, light: Tensor<2>) -> Tensor<3> {
        let [m, n, _] = points.dims();
        let normals = self.normals(points.clone());
        let position = light.clone().narrow(1, 0, 3).reshape([m, 1, 3]) * POSITION_UNIT;
        let to_light = normalise(position - points);
        let lambert = (normals * to_light).sum_dim(2).clamp_min(0.0); // [M, n, 1]
        let colour = light.clone().narrow(1, 3, 3).reshape([m, 1, 3]) + 0.5;
        let ambient = light.narrow(1, 6, 3).reshape([m, 1, 3]) + 0.5;
        let shaded = albedo * (ambient + colour * lambert);
        debug_assert_eq!(shaded.dims(), [m, n, 3]);
        shaded
    }

    /// Unit vertex normals `[M, n, 3]` toward the camera side of the surface: the
    /// area-weighted sum of the normals of the triangles around each vertex.
    pub fn normals(&self, points: Tensor<3>) -> Tensor<3> {
        let [m, n, _] = points.dims();
        let t = self.triangles.len();
        let corners = points.select(1, self.corners.clone()).reshape([m, t, 3, 3]);
        let corner = |k: usize| corners.clone().narrow(2, k, 1).reshape([m, t, 3]);
        let (a, b, c) = (corner(0), corner(1), corner(2));
        // Counter-clockwise seen from the front: (b − a) × (c − a) points out of the front
        // of the face, toward the camera (the change to camera space is a rotation).
        let faces = cross(b - a.clone(), c - a); // [M, t, 3]
                                                 // One product for the whole batch: [n, t] × [t, M·3].
        let flat = faces.swap_dims(0, 1).reshape([t, m * 3]);
        let summed = self
            .incidence
            .clone()
            .matmul(flat)
            .reshape([n, m, 3])
            .swap_dims(0, 1);
        normalise(summed)
    }

    /// The visible pixels of screen positions `[M, n, 3]` (x, y, depth) and their colours
    /// interpolated from per-vertex `colours` `[M, n, 3]`.
    pub fn draw(&self, screen: Tensor<3>, colours: Tensor<3>) -> Rendering {
        let [m, n, _] = screen.dims();
        let host = values(screen.clone()).unwrap_or_default();
        let mut fragments = Vec::new();
        for (i, chunk) in host.chunks_exact(n * 3).enumerate().take(m) {
            let points: Vec<[f32; 3]> = chunk.chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect();
            fragments.extend(rasterize(i as u32, &points, &self.triangles, self.size));
        }
        let colours = self.interpolate(screen, colours, &fragments);
        Rendering { fragments, colours }
    }

    /// The colours of `fragments`: barycentric weights of each pixel centre in its triangle
    /// (computed from `screen`, so positions get gradients) applied to the corners' colours.
    pub fn interpolate(
        &self,
        screen: Tensor<3>,
        colours: Tensor<3>,
        fragments: &[Fragment],
    ) -> Tensor<2> {
        let [m, n, _] = screen.dims();
        let device = screen.device();
        let count = fragments.len();
        if count == 0 {
            return Tensor::zeros([0, 3], &device);
        }
        let rows: Vec<i64> = fragments
            .iter()
            .flat_map(|f| {
                let tri = self.triangles[f.triangle as usize];
                tri.map(|v| i64::from(f.image) * n as i64 + i64::from(v))
            })
            .collect();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, vec![count * 3]), &device);
        let centres: Vec<f32> = fragments
            .iter()
            .flat_map(|f| {
                let (x, y) = (f.pixel as usize % self.size, f.pixel as usize / self.size);
                [x as f32 + 0.5, y as f32 + 0.5]
            })
            .collect();
        let centres = Tensor::<2>::from_data(TensorData::new(centres, vec![count, 2]), &device);
        let xy = screen
            .narrow(2, 0, 2)
            .reshape([m * n, 2])
            .select(0, rows.clone())
            .reshape([count, 3, 2]);
        let corner = |k: usize| xy.clone().narrow(1, k, 1).reshape([count, 2]);
        let (a, b, c) = (corner(0), corner(1), corner(2));
        let edge = |u: Tensor<2>, v: Tensor<2>| -> Tensor<2> {
            let (u, v) = (u - centres.clone(), v - centres.clone());
            let x = |t: &Tensor<2>, k: usize| t.clone().narrow(1, k, 1);
            x(&u, 0) * x(&v, 1) - x(&u, 1) * x(&v, 0)
        };
        let (w0, w1, w2) = (
            edge(b.clone(), c.clone()),
            edge(c.clone(), a.clone()),
            edge(a, b),
        );
        let area = w0.clone() + w1.clone() + w2.clone();
        let weights = Tensor::cat(vec![w0, w1, w2], 1) / area; // [count, 3]
        let corner_colours = colours
            .reshape([m * n, 3])
            .select(0, rows)
            .reshape([count, 3, 3]);
        (corner_colours * weights.reshape([count, 3, 1]))
            .sum_dim(1)
            .reshape([count, 3])
    }
}

/// R = Rz(roll) · Ry(yaw) · Rx(pitch) for `[M]` angles, `[M, 3, 3]`.
fn rotation(pitch: Tensor<1>, yaw: Tensor<1>, roll: Tensor<1>) -> Tensor<3> {
    let m = pitch.dims()[0];
    let (cx, sx) = (pitch.clone().cos(), pitch.sin());
    let (cy, sy) = (yaw.clone().cos(), yaw.sin());
    let (cz, sz) = (roll.clone().cos(), roll.sin());
    let entries = vec![
        cz.clone() * cy.clone(),
        cz.clone() * sy.clone() * sx.clone() - sz.clone() * cx.clone(),
        cz.clone() * sy.clone() * cx.clone() + sz.clone() * sx.clone(),
        sz.clone() * cy.clone(),
        sz.clone() * sy.clone() * sx.clone() + cz.clone() * cx.clone(),
        sz * sy.clone() * cx.clone() - cz * sx.clone(),
        sy.neg(),
        cy.clone() * sx,
        cy * cx,
    ];
    Tensor::stack::<2>(entries, 1).reshape([m, 3, 3])
}

fn cross(a: Tensor<3>, b: Tensor<3>) -> Tensor<3> {
    let c = |t: &Tensor<3>, k: usize| t.clone().narrow(2, k, 1);
    Tensor::cat(
        vec![
            c(&a, 1) * c(&b, 2) - c(&a, 2) * c(&b, 1),
            c(&a, 2) * c(&b, 0) - c(&a, 0) * c(&b, 2),
            c(&a, 0) * c(&b, 1) - c(&a, 1) * c(&b, 0),
        ],
        2,
    )
}

fn normalise(v: Tensor<3>) -> Tensor<3> {
    let length = (v.clone() * v.clone()).sum_dim(2).add_scalar(1e-12).sqrt();
    v / length
}
