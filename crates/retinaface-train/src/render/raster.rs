//! The visibility pass of the renderer, outside autodiff: which triangle each pixel of a
//! crop sees. Coverage is a step function of the vertex positions, so it carries no
//! gradient; what does (barycentric weights, colours, shading) is computed afterwards on
//! tensors, for the pixels found here.

/// A pixel of one rendering and the triangle it sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fragment {
    /// The rendering (e.g. the anchor) it belongs to.
    pub image: u32,
    /// `y · size + x`.
    pub pixel: u32,
    pub triangle: u32,
}

/// The screen-space barycentric weights of point (px, py) in triangle abc (x, y), or `None`
/// for a triangle of no area.
pub fn barycentric(a: [f32; 2], b: [f32; 2], c: [f32; 2], p: [f32; 2]) -> Option<[f32; 3]> {
    let area = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0]);
    if area.abs() < 1e-12 {
        return None;
    }
    let edge =
        |u: [f32; 2], v: [f32; 2]| (u[0] - p[0]) * (v[1] - p[1]) - (u[1] - p[1]) * (v[0] - p[0]);
    Some([edge(b, c) / area, edge(c, a) / area, edge(a, b) / area])
}

/// The front-most triangle at the centre (x + ½, y + ½) of each pixel of a `size × size`
/// crop. `screen` holds each vertex's (x, y, depth), depth growing away from the camera;
/// triangles with a vertex at depth ≤ 0 (behind the camera) or a non-finite coordinate are
/// skipped. Either winding is drawn.
pub fn rasterize(
    image: u32,
    screen: &[[f32; 3]],
    triangles: &[[u32; 3]],
    size: usize,
) -> Vec<Fragment> {
    let mut depth = vec![f32::INFINITY; size * size];
    let mut seen = vec![u32::MAX; size * size];
    for (t, tri) in triangles.iter().enumerate() {
        let [a, b, c] = tri.map(|v| screen[v as usize]);
        if [a, b, c]
            .iter()
            .any(|p| p.iter().any(|v| !v.is_finite()) || p[2] <= 0.0)
        {
            continue;
        }
        let lo = |i: usize| a[i].min(b[i]).min(c[i]);
        let hi = |i: usize| a[i].max(b[i]).max(c[i]);
        // Pixel centres inside the bounding box, clipped to the crop.
        let first = |v: f32| (v - 0.5).ceil().max(0.0) as usize;
        let last = |v: f32| ((v - 0.5).floor().min(size as f32 - 1.0)).max(-1.0) as isize;
        let (x0, x1, y0, y1) = (first(lo(0)), last(hi(0)), first(lo(1)), last(hi(1)));
        for y in y0..(y1 + 1).max(0) as usize {
            for x in x0..(x1 + 1).max(0) as usize {
                let p = [x as f32 + 0.5, y as f32 + 0.5];
                let Some(w) = barycentric([a[0], a[1]], [b[0], b[1]], [c[0], c[1]], p) else {
                    continue;
                };
                if w.iter().any(|&v| v < 0.0) {
                    continue;
                }
                let z = w[0] * a[2] + w[1] * b[2] + w[2] * c[2];
                let i = y * size + x;
                if z < depth[i] {
                    depth[i] = z;
                    seen[i] = t as u32;
                }
            }
        }
    }
    seen.iter()
        .enumerate()
        .filter(|(_, &t)| t != u32::MAX)
        .map(|(pixel, &triangle)| Fragment {
            image,
            pixel: pixel as u32,
            triangle,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_triangle_covers_the_pixel_centres_inside_it() {
        // Right triangle with legs of 4 pixels from (1, 1): centres (x+½, y+½) with
        // (x+½−1) + (y+½−1) ≤ 4 and both ≥ 0.
        let screen = [[1.0, 1.0, 1.0], [5.0, 1.0, 1.0], [1.0, 5.0, 1.0]];
        let frags = rasterize(0, &screen, &[[0, 1, 2]], 8);
        let mut expected = Vec::new();
        for y in 0..8 {
            for x in 0..8 {
                let (u, v) = (x as f32 - 0.5, y as f32 - 0.5);
                if u >= 0.0 && v >= 0.0 && u + v <= 4.0 {
                    expected.push((y * 8 + x) as u32);
                }
            }
        }
        assert_eq!(frags.iter().map(|f| f.pixel).collect::<Vec<_>>(), expected);
        assert_eq!(expected.len(), 10);
    }

    #[test]
    fn the_nearer_triangle_wins_and_offscreen_parts_are_clipped() {
        let screen = [
            [-3.0, -3.0, 2.0],
            [20.0, -3.0, 2.0],
            [-3.0, 20.0, 2.0],
            [0.0, 0.0, 1.0],
            [6.0, 0.0, 1.0],
            [0.0, 6.0, 1.0],
        ];
        let frags = rasterize(3, &screen, &[[0, 1, 2], [3, 4, 5]], 4);
        assert_eq!(frags.len(), 16);
        for f in &frags {
            let (x, y) = (f.pixel % 4, f.pixel / 4);
            let near = (x as f32 + 0.5) + (y as f32 + 0.5) <= 6.0;
            assert_eq!(f.triangle, u32::from(near), "pixel {x},{y}");
            assert_eq!(f.image, 3);
        }
        // Behind the camera: nothing.
        let behind = [[0.0, 0.0, -1.0], [6.0, 0.0, 1.0], [0.0, 6.0, 1.0]];
        assert!(rasterize(0, &behind, &[[0, 1, 2]], 4).is_empty());
    }
}
