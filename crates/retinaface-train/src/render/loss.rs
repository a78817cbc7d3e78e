//! L_pixel (SPEC §1.7): the mean absolute difference between a rendering and the image under
//! it, over the pixels the mesh covers, averaged over the renderings that cover any.

use super::{Renderer, Rendering};
use crate::matching::Targets;
use crate::network::MeshDecoder;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use retinaface::mesh::branch::LANDMARK_VERTICES;
use retinaface::mesh::{CAMERA_PARAMS, LIGHT_PARAMS};
use retinaface::post::anchors::Prior;
use retinaface::post::coding::decode_landmarks;

/// The square crop of side `max(w, h)` around each box's centre, resampled bilinearly to
/// `size × size`, RGB in [0, 1], `[boxes, size, size, 3]` row-major. Outside the image is
/// black (a face at the border is compared with what the camera saw: nothing).
pub fn crops(image: &RgbImage, boxes: &[[f32; 4]], size: usize) -> Vec<f32> {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= w || y >= h {
            return [0.0; 3];
        }
        image
            .get_pixel(x as u32, y as u32)
            .0
            .map(|v| f32::from(v) / 255.0)
    };
    crops_with(pixel, boxes, size)
}

/// [`crops`] of a training batch's image: `image` is `[3, s, s]` BGR minus `mean_bgr`.
pub fn crops_of_input(
    image: &[f32],
    s: usize,
    mean_bgr: [f32; 3],
    boxes: &[[f32; 4]],
    size: usize,
) -> Vec<f32> {
    let plane = s * s;
    let pixel = |x: i64, y: i64| -> [f32; 3] {
        if x < 0 || y < 0 || x >= s as i64 || y >= s as i64 {
            return [0.0; 3];
        }
        let i = y as usize * s + x as usize;
        // BGR planes back to RGB in [0, 1].
        [2, 1, 0].map(|c| ((image[c * plane + i] + mean_bgr[c]) / 255.0).clamp(0.0, 1.0))
    };
    crops_with(pixel, boxes, size)
}

/// The square a crop of box `b` covers: its left and top edges and its side, max(w, h)
/// around the box's centre.
fn crop_square(b: [f32; 4]) -> (f32, f32, f32) {
    let side = (b[2] - b[0]).max(b[3] - b[1]).max(1e-3);
    (
        (b[0] + b[2]) / 2.0 - side / 2.0,
        (b[1] + b[3]) / 2.0 - side / 2.0,
        side,
    )
}

fn crops_with(pixel: impl Fn(i64, i64) -> [f32; 3], boxes: &[[f32; 4]], size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(boxes.len() * size * size * 3);
    for b in boxes {
        let (left, top, side) = crop_square(*b);
        let step = side / size as f32;
        for row in 0..size {
            for col in 0..size {
                // The crop pixel's centre in image coordinates, then bilinear sampling
                // between pixel centres.
                let x = left + (col as f32 + 0.5) * step - 0.5;
                let y = top + (row as f32 + 0.5) * step - 0.5;
                let (x0, y0) = (x.floor(), y.floor());
                let (fx, fy) = (x - x0, y - y0);
                let (x0, y0) = (x0 as i64, y0 as i64);
                let [a, b, c, d] = [
                    pixel(x0, y0),
                    pixel(x0 + 1, y0),
                    pixel(x0, y0 + 1),
                    pixel(x0 + 1, y0 + 1),
                ];
                for k in 0..3 {
                    let top = a[k] + (b[k] - a[k]) * fx;
                    let bottom = c[k] + (d[k] - c[k]) * fx;
                    out.push(top + (bottom - top) * fy);
                }
            }
        }
    }
    out
}

/// L_pixel of `rendering` against `targets` (`[renderings, size, size, 3]`, as [`crops`]
/// makes them): per rendering the mean of |R − I| over its covered pixels and channels, then
/// the mean over the renderings that cover any pixel. Zero when nothing is covered.
pub fn pixel_loss(rendering: &Rendering, targets: &[f32], size: usize) -> Tensor<1> {
    let device = rendering.colours.device();
    let fragments = &rendering.fragments;
    if fragments.is_empty() {
        return Tensor::zeros([1], &device);
    }
    let images = fragments
        .iter()
        .map(|f| f.image as usize)
        .max()
        .unwrap_or(0)
        + 1;
    let mut counts = vec![0usize; images];
    fragments.iter().for_each(|f| counts[f.image as usize] += 1);
    let covered = counts.iter().filter(|&&c| c > 0).count() as f32;
    let mut target = Vec::with_capacity(fragments.len() * 3);
    let mut weight = Vec::with_capacity(fragments.len() * 3);
    for f in fragments {
        let base = (f.image as usize * size * size + f.pixel as usize) * 3;
        target.extend_from_slice(&targets[base..base + 3]);
        let w = 1.0 / (3.0 * counts[f.image as usize] as f32 * covered);
        weight.extend_from_slice(&[w; 3]);
    }
    let n = fragments.len();
    let target = Tensor::<2>::from_data(TensorData::new(target, vec![n, 3]), &device);
    let weight = Tensor::<2>::from_data(TensorData::new(weight, vec![n, 3]), &device);
    ((rendering.colours.clone() - target).abs() * weight).sum()
}

/// The face anchors the branch renders: per image, up to `per_image` with the highest IoU
/// with their face (ties by anchor index), as (image, anchor).
pub fn chosen_anchors(targets: &[Targets], per_image: usize) -> Vec<(usize, usize)> {
    let mut chosen = Vec::new();
    for (image, t) in targets.iter().enumerate() {
        let mut best = t.positive_iou.clone();
        best.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        chosen.extend(
            best.iter()
                .take(per_image)
                .map(|&(a, _)| (image, a as usize)),
        );
    }
    chosen
}

/// What the branch's term reads of a training batch besides the network's output.
#[derive(Debug, Clone, Copy)]
pub struct BatchInputs<'a> {
    /// The input, `[B, 3, side, side]` BGR minus `mean_bgr`.
    pub images: &'a [f32],
    pub side: usize,
    pub mean_bgr: [f32; 3],
    /// The anchors as fractions of the input's side (as the loader's and
    /// `post::anchors::priors` are).
    pub priors: &'a [Prior],
    /// The batch's encoded targets, one per image (the landmark term reads its points).
    pub targets: &'a [Targets],
    /// The box coding's variances the targets were encoded with.
    pub variances: [f32; 2],
}

impl BatchInputs<'_> {
    /// The square crop around anchor `a`'s prior, in input pixels.
    fn prior_box(&self, a: usize) -> [f32; 4] {
        let (q, side) = (self.priors[a], self.side as f32);
        [
            (q.cx - q.w / 2.0) * side,
            (q.cy - q.h / 2.0) * side,
            (q.cx + q.w / 2.0) * side,
            (q.cy + q.h / 2.0) * side,
        ]
    }

    /// Image `i`'s labelled points for anchor `a`, in the pixels of a `size` crop of the
    /// prior (as [`crops`] cuts it); `None` when the face has no landmarks.
    fn landmarks_in_crop(&self, i: usize, a: usize, size: usize) -> Option<[[f32; 2]; 5]> {
        let t = self.targets.get(i)?;
        if t.landmark_mask.get(a).copied().unwrap_or(0.0) <= 0.0 {
            return None;
        }
        let code = t.landmarks.get(10 * a..10 * a + 10)?;
        let points = decode_landmarks(&self.priors[a], code, self.variances);
        let (x0, y0, crop_side) = crop_square(self.prior_box(a));
        let scale = size as f32 / crop_side;
        let side = self.side as f32;
        Some(points.map(|[x, y]| [(x * side - x0) * scale, (y * side - y0) * scale]))
    }
}

/// The branch's terms for a batch: L_pixel, and the landmark term where any chosen anchor's
/// face has labelled points.
#[derive(Debug, Clone)]
pub struct BranchLoss {
    pub pixel: Tensor<1>,
    pub landmarks: Option<Tensor<1>>,
}

/// The mesh's five landmark points ([`LANDMARK_VERTICES`]: eyes as the mean of their corners)
/// of `[M, n, ≥2]` screen positions, `[M, 5, 2]`.
pub fn landmark_points(screen: Tensor<3>) -> Tensor<3> {
    let [m, n, _] = screen.dims();
    let mut select = vec![0f32; 5 * n];
    for (k, ids) in LANDMARK_VERTICES.iter().enumerate() {
        ids.iter()
            .for_each(|&v| select[k * n + v] = 1.0 / ids.len() as f32);
    }
    let select = Tensor::<3>::from_data(TensorData::new(select, vec![1, 5, n]), &screen.device());
    select.expand([m, 5, n]).matmul(screen.narrow(2, 0, 2))
}

/// The landmark term: the mean over the renderings with labelled points of the mean
/// |p − t| / size over their five points and both coordinates (`points` `[M, 5, 2]` in crop
/// pixels, as [`landmark_points`]). `None` when no rendering has labelled points.
pub fn landmark_loss(
    points: Tensor<3>,
    labelled: &[Option<[[f32; 2]; 5]>],
    size: usize,
) -> Option<Tensor<1>> {
    let device = points.device();
    let m = labelled.len();
    let count = labelled.iter().filter(|l| l.is_some()).count();
    if count == 0 {
        return None;
    }
    let mut target = vec![0f32; m * 10];
    let mut weight = vec![0f32; m * 10];
    for (k, l) in labelled.iter().enumerate() {
        if let Some(p) = l {
            target[k * 10..k * 10 + 10].copy_from_slice(p.as_flattened());
            weight[k * 10..k * 10 + 10].fill(1.0 / (10.0 * count as f32 * size as f32));
        }
    }
    let target = Tensor::<3>::from_data(TensorData::new(target, vec![m, 5, 2]), &device);
    let weight = Tensor::<3>::from_data(TensorData::new(weight, vec![m, 5, 2]), &device);
    Some(((points - target).abs() * weight).sum())
}

/// The mesh branch's term of the multi-task loss: the chosen anchors' P_ST decoded to
/// meshes, rendered with their P_cam and P_ill into their priors' crops of the input.
#[derive(Debug, Clone)]
pub struct BranchTerm {
    renderer: Renderer,
    canonical: Tensor<3>,
}

impl BranchTerm {
    /// For crops of `crop` pixels on `device`.
    pub fn new(crop: usize, device: &burn::tensor::Device) -> Self {
        let mesh = retinaface::mesh::Mesh::canonical();
        let flat: Vec<f32> = mesh.vertices.iter().flatten().copied().collect();
        BranchTerm {
            renderer: Renderer::new(mesh, crop, device),
            canonical: Tensor::from_data(TensorData::new(flat, vec![1, mesh.len(), 3]), device),
        }
    }

    /// Render the decoder's `[M, 468, 6]` outputs (position offsets from the canonical face,
    /// colours less ½) with `[M, 7]` cameras and `[M, 9]` lights.
    pub fn render_decoded(&self, raw: Tensor<3>, camera: Tensor<2>, light: Tensor<2>) -> Rendering {
        self.render_projected(raw, camera, light).0
    }

    /// [`BranchTerm::render_decoded`], with the vertices' `[M, 468, 3]` screen positions
    /// (x, y in crop pixels, depth).
    fn render_projected(
        &self,
        raw: Tensor<3>,
        camera: Tensor<2>,
        light: Tensor<2>,
    ) -> (Rendering, Tensor<3>) {
        let [m, n, _] = raw.dims();
        let vertices = self.canonical.clone().expand([m, n, 3]) + raw.clone().narrow(2, 0, 3);
        let albedo = raw.narrow(2, 3, 3) + 0.5;
        let (points, focal) = self.renderer.to_camera(vertices, camera);
        let screen = self.renderer.project(points.clone(), focal);
        let colours = self.renderer.shade(points, albedo, light);
        (self.renderer.draw(screen.clone(), colours), screen)
    }

    /// The branch's terms for `chosen` anchors; `params` is the network's `[B, N, P]` mesh
    /// output. The landmark term only `with_landmarks` (a run that does not weight it adds
    /// nothing to the graph). `None` when no anchor is chosen.
    pub fn loss(
        &self,
        params: Tensor<3>,
        decoder: &MeshDecoder,
        chosen: &[(usize, usize)],
        batch: &BatchInputs,
        with_landmarks: bool,
    ) -> Option<BranchLoss> {
        let (rendering, screen, targets) =
            self.render_chosen_projected(params, decoder, chosen, batch)?;
        let size = self.renderer.size();
        let landmarks = with_landmarks
            .then(|| {
                let labelled: Vec<_> = chosen
                    .iter()
                    .map(|&(i, a)| batch.landmarks_in_crop(i, a, size))
                    .collect();
                landmark_loss(landmark_points(screen), &labelled, size)
            })
            .flatten();
        Some(BranchLoss {
            pixel: pixel_loss(&rendering, &targets, size),
            landmarks,
        })
    }

    /// The renderings of `chosen` anchors and the crops of the input they are compared with
    /// (`[chosen, size, size, 3]`, as [`crops`] makes them); arguments as [`BranchTerm::loss`].
    pub fn render_chosen(
        &self,
        params: Tensor<3>,
        decoder: &MeshDecoder,
        chosen: &[(usize, usize)],
        batch: &BatchInputs,
    ) -> Option<(Rendering, Vec<f32>)> {
        self.render_chosen_projected(params, decoder, chosen, batch)
            .map(|(rendering, _, targets)| (rendering, targets))
    }

    fn render_chosen_projected(
        &self,
        params: Tensor<3>,
        decoder: &MeshDecoder,
        chosen: &[(usize, usize)],
        batch: &BatchInputs,
    ) -> Option<(Rendering, Tensor<3>, Vec<f32>)> {
        if chosen.is_empty() {
            return None;
        }
        let [b, n, p] = params.dims();
        let device = params.device();
        let rows: Vec<i64> = chosen.iter().map(|&(i, a)| (i * n + a) as i64).collect();
        let m = rows.len();
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, vec![m]), &device);
        let picked = params.reshape([b * n, p]).select(0, rows);
        let latent = p - CAMERA_PARAMS - LIGHT_PARAMS;
        let code = picked.clone().narrow(1, 0, latent);
        let camera = picked.clone().narrow(1, latent, CAMERA_PARAMS);
        let light = picked.narrow(1, latent + CAMERA_PARAMS, LIGHT_PARAMS);
        let (rendering, screen) = self.render_projected(decoder.forward(code), camera, light);
        let crop = self.renderer.size();
        let (s, plane) = (batch.side, 3 * batch.side * batch.side);
        let mut targets = Vec::with_capacity(m * crop * crop * 3);
        for &(i, a) in chosen {
            let image = &batch.images[i * plane..(i + 1) * plane];
            targets.extend(crops_of_input(
                image,
                s,
                batch.mean_bgr,
                &[batch.prior_box(a)],
                crop,
            ));
        }
        Some((rendering, screen, targets))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::raster::Fragment;
    use burn::tensor::Device;

    #[test]
    fn crops_sample_the_square_around_the_box() {
        let mut image = RgbImage::new(8, 8);
        for (x, y, p) in image.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 30) as u8, (y * 30) as u8, 0]);
        }
        // A 4 × 2 box at (2, 3): the square 4 × 4 around its centre (4, 4) is x, y in [2, 6).
        let c = crops(&image, &[[2.0, 3.0, 6.0, 5.0]], 4);
        for row in 0..4 {
            for col in 0..4 {
                let i = (row * 4 + col) * 3;
                assert!((c[i] - (2 + col) as f32 * 30.0 / 255.0).abs() < 1e-6);
                assert!((c[i + 1] - (2 + row) as f32 * 30.0 / 255.0).abs() < 1e-6);
            }
        }
        // Beyond the border: black.
        let outside = crops(&image, &[[-20.0, -20.0, -10.0, -10.0]], 2);
        assert!(outside.iter().all(|&v| v == 0.0));
    }

    #[test]
    fn each_chosen_anchor_is_compared_with_the_crop_of_its_prior() {
        let device = Device::flex();
        // A 32 × 32 input, black on the left half, white on the right (BGR minus the mean).
        let (s, mean) = (32, [104.0, 117.0, 123.0]);
        let mut image = vec![0f32; 3 * s * s];
        for c in 0..3 {
            for y in 0..s {
                for x in 0..s {
                    let v = if x < s / 2 { 0.0 } else { 255.0 };
                    image[c * s * s + y * s + x] = v - mean[c];
                }
            }
        }
        // Priors as fractions of the input: one on each half.
        let prior = |cx| Prior {
            cx,
            cy: 0.5,
            w: 0.4,
            h: 0.4,
        };
        let priors = [prior(0.25), prior(0.75)];
        let spec = retinaface::mesh::decoder::DecoderSpec::default();
        let decoder = MeshDecoder::new(&spec, None, &device, 0).unwrap();
        let p = retinaface::mesh::anchor_params(&spec);
        let params = Tensor::<3>::zeros([1, 2, p], &device);
        let term = BranchTerm::new(8, &device);
        let batch = BatchInputs {
            images: &image,
            side: s,
            mean_bgr: mean,
            priors: &priors,
            targets: &[],
            variances: [0.1, 0.2],
        };
        let (_, targets) = term
            .render_chosen(params, &decoder, &[(0, 0), (0, 1)], &batch)
            .unwrap();
        let (left, right) = targets.split_at(8 * 8 * 3);
        assert!(left.iter().all(|&v| v == 0.0), "{left:?}");
        assert!(right.iter().all(|&v| v == 1.0), "{right:?}");
    }

    #[test]
    fn the_loss_averages_each_rendering_over_its_own_pixels() {
        let device = Device::flex();
        let fragment = |image, pixel| Fragment {
            image,
            pixel,
            triangle: 0,
        };
        // Rendering 0 covers one pixel off by 0.3 in every channel; rendering 1 covers
        // three pixels off by 0.1; rendering 2 covers none.
        let fragments = vec![
            fragment(0, 0),
            fragment(1, 0),
            fragment(1, 1),
            fragment(1, 3),
        ];
        let colours = vec![0.3f32; 3].into_iter().chain(vec![0.1; 9]).collect();
        let rendering = Rendering {
            fragments,
            colours: Tensor::from_data(TensorData::new(colours, vec![4, 3]), &device),
        };
        let targets = vec![0f32; 3 * 4 * 3];
        let loss = pixel_loss(&rendering, &targets, 2)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert!((loss[0] - (0.3 + 0.1) / 2.0).abs() < 1e-6, "{loss:?}");
    }
    #[test]
    fn the_landmark_term_compares_the_landmark_vertices_with_the_labels_in_crop_pixels() {
        let device = Device::flex();
        // One input of 100 px, one prior of 0.4 × 0.4 centred at (0.5, 0.5): its crop is
        // input pixels [30, 70) in both axes, 10 crop pixels for 40 input pixels at size 10.
        let prior = Prior {
            cx: 0.5,
            cy: 0.5,
            w: 0.4,
            h: 0.4,
        };
        let variances = [0.1, 0.2];
        let labels = [
            [0.4, 0.4],
            [0.6, 0.4],
            [0.5, 0.5],
            [0.42, 0.62],
            [0.58, 0.62],
        ];
        let face = crate::matching::TargetFace {
            bbox: [0.3, 0.3, 0.7, 0.7],
            landmarks: Some(labels),
        };
        let targets = crate::matching::targets(
            &[prior],
            &[face],
            &crate::matching::MatchConfig::port(),
            variances,
        );
        let batch = BatchInputs {
            images: &[],
            side: 100,
            mean_bgr: [0.0; 3],
            priors: &[prior],
            targets: std::slice::from_ref(&targets),
            variances,
        };
        let inside = batch.landmarks_in_crop(0, 0, 10).unwrap();
        let expected = labels.map(|[x, y]| [(x * 100.0 - 30.0) / 4.0, (y * 100.0 - 30.0) / 4.0]);
        for (p, e) in inside.iter().zip(&expected) {
            assert!(
                (p[0] - e[0]).abs() < 1e-4 && (p[1] - e[1]).abs() < 1e-4,
                "{p:?} {e:?}"
            );
        }
        // Screen positions: every vertex at (v, 2v) for vertex index v, so the eyes are the
        // means of their corners' indices.
        let n = 468;
        let screen: Vec<f32> = (0..n)
            .flat_map(|v| [v as f32, 2.0 * v as f32, 1.0])
            .collect();
        let screen = Tensor::<3>::from_data(TensorData::new(screen, vec![1, n, 3]), &device);
        let points = landmark_points(screen);
        let got = points.clone().into_data().try_to_vec::<f32>().unwrap();
        let xs = [83.0, 312.5, 1.0, 61.0, 291.0];
        for (k, x) in xs.iter().enumerate() {
            assert_eq!([got[2 * k], got[2 * k + 1]], [*x, 2.0 * x]);
        }
        // Two renderings, one labelled: the mean |p − t| / size over its ten coordinates.
        let both = Tensor::cat(vec![points.clone(), points], 0);
        let zero = [[0.0; 2]; 5];
        let loss = landmark_loss(both, &[None, Some(zero)], 10).unwrap();
        let expected: f32 = xs.iter().map(|x| 3.0 * x).sum::<f32>() / 10.0 / 10.0;
        let loss = loss.into_scalar::<f32>();
        assert!(
            (loss - expected).abs() < 1e-3 * expected,
            "{loss} {expected}"
        );
        assert!(landmark_loss(Tensor::zeros([1, 5, 2], &device), &[None], 10).is_none());
    }
}
