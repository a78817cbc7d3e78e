//! L_pixel (SPEC §1.7): the mean absolute difference between a rendering and the image under
//! it, over the pixels the mesh covers, averaged over the renderings that cover any.

use super::{Renderer, Rendering};
use crate::matching::Targets;
use crate::network::MeshDecoder;
use burn::tensor::{Int, Tensor, TensorData};
use image::RgbImage;
use retinaface::mesh::{CAMERA_PARAMS, LIGHT_PARAMS};
use retinaface::post::anchors::Prior;

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

fn crops_with(pixel: impl Fn(i64, i64) -> [f32; 3], boxes: &[[f32; 4]], size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(boxes.len() * size * size * 3);
    for b in boxes {
        let side = (b[2] - b[0]).max(b[3] - b[1]).max(1e-3);
        let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
        let step = side / size as f32;
        for row in 0..size {
            for col in 0..size {
                // The crop pixel's centre in image coordinates, then bilinear sampling
                // between pixel centres.
                let x = cx - side / 2.0 + (col as f32 + 0.5) * step - 0.5;
                let y = cy - side / 2.0 + (row as f32 + 0.5) * step - 0.5;
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
        let [m, n, _] = raw.dims();
        let vertices = self.canonical.clone().expand([m, n, 3]) + raw.clone().narrow(2, 0, 3);
        let albedo = raw.narrow(2, 3, 3) + 0.5;
        self.renderer.render(vertices, albedo, camera, light)
    }

    /// L_pixel of `chosen` anchors; `params` is the network's `[B, N, P]` mesh output,
    /// `images` the batch input (`[B, 3, s, s]` BGR minus `mean_bgr`), `priors` the anchors
    /// as fractions of the input's side (as the loader's and `post::anchors::priors` are).
    /// `None` when no anchor is chosen.
    #[allow(clippy::too_many_arguments)]
    pub fn loss(
        &self,
        params: Tensor<3>,
        decoder: &MeshDecoder,
        chosen: &[(usize, usize)],
        priors: &[Prior],
        images: &[f32],
        s: usize,
        mean_bgr: [f32; 3],
    ) -> Option<Tensor<1>> {
        let (rendering, targets) =
            self.render_chosen(params, decoder, chosen, priors, images, s, mean_bgr)?;
        Some(pixel_loss(&rendering, &targets, self.renderer.size()))
    }

    /// The renderings of `chosen` anchors and the crops of the input they are compared with
    /// (`[chosen, size, size, 3]`, as [`crops`] makes them); arguments as [`BranchTerm::loss`].
    #[allow(clippy::too_many_arguments)]
    pub fn render_chosen(
        &self,
        params: Tensor<3>,
        decoder: &MeshDecoder,
        chosen: &[(usize, usize)],
        priors: &[Prior],
        images: &[f32],
        s: usize,
        mean_bgr: [f32; 3],
    ) -> Option<(Rendering, Vec<f32>)> {
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
        let rendering = self.render_decoded(decoder.forward(code), camera, light);
        let crop = self.renderer.size();
        let plane = 3 * s * s;
        let mut targets = Vec::with_capacity(m * crop * crop * 3);
        // Priors are fractions of the (square) input; crops are cut in its pixels.
        let side = s as f32;
        for &(i, a) in chosen {
            let q = priors[a];
            let corners = [
                (q.cx - q.w / 2.0) * side,
                (q.cy - q.h / 2.0) * side,
                (q.cx + q.w / 2.0) * side,
                (q.cy + q.h / 2.0) * side,
            ];
            let image = &images[i * plane..(i + 1) * plane];
            targets.extend(crops_of_input(image, s, mean_bgr, &[corners], crop));
        }
        Some((rendering, targets))
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
        let (_, targets) = term
            .render_chosen(
                params,
                &decoder,
                &[(0, 0), (0, 1)],
                &priors,
                &image,
                s,
                mean,
            )
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
}
