//! Detection results: `Faces` (the arrays of one image) and `Face` (one record).

use numpy::ndarray::{Array1, Array2, Array3};
use numpy::{PyArray1, PyArray2, PyArray3};
use pyo3::exceptions::PyIndexError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use retinaface::Face as RustFace;

/// The faces found in one image, best first.
///
/// Arrays (new numpy arrays on every access):
///   boxes: (N, 4) float32, [x1, y1, x2, y2] in pixels of the image as given
///   scores: (N,) float32
///   landmarks: (N, 5, 2) float32 (left eye, right eye, nose tip, left and right mouth
///     corner, [x, y]), or None for a model without a landmark head
///
/// `len(faces)`, `faces[i]` and iteration give `Face` records; `to_list()` gives the dicts of
/// `retinaface detect --json`.
#[pyclass(module = "retinaface_rs", frozen, sequence)]
pub struct Faces {
    pub faces: Vec<RustFace>,
    pub width: u32,
    pub height: u32,
    pub landmarks: bool,
}

impl Faces {
    /// Each face's five points (NaN for a face without them), or `None` for a model without
    /// a landmark head.
    fn landmark_sets(&self) -> Option<Vec<[[f32; 2]; 5]>> {
        self.landmarks.then(|| {
            self.faces
                .iter()
                .map(|f| f.landmarks.unwrap_or([[f32::NAN; 2]; 5]))
                .collect()
        })
    }

    /// The result for an image of `width × height`.
    pub fn new(faces: Vec<RustFace>, width: u32, height: u32, landmarks: bool) -> Faces {
        Faces {
            faces,
            width,
            height,
            landmarks,
        }
    }
}

#[pymethods]
impl Faces {
    /// Faces(boxes, scores, landmarks=None, width=0, height=0): a result built from its
    /// arrays (what pickling does), e.g. to pass other detections to `align` or `anonymize`.
    #[new]
    #[pyo3(signature = (boxes, scores, landmarks=None, width=0, height=0))]
    fn py_new(
        boxes: Vec<[f32; 4]>,
        scores: Vec<f32>,
        landmarks: Option<Vec<[[f32; 2]; 5]>>,
        width: u32,
        height: u32,
    ) -> PyResult<Faces> {
        let n = boxes.len();
        if scores.len() != n || landmarks.as_ref().is_some_and(|l| l.len() != n) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "{n} boxes, {} scores and {} landmark sets: one of each per face",
                scores.len(),
                landmarks.as_ref().map_or(n, Vec::len)
            )));
        }
        let faces = (0..n)
            .map(|i| RustFace {
                bbox: boxes[i],
                score: scores[i],
                landmarks: landmarks.as_ref().map(|l| l[i]),
            })
            .collect();
        Ok(Faces::new(faces, width, height, landmarks.is_some()))
    }

    /// Pickling: the arrays as lists and the image size.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> (
        Bound<'py, pyo3::types::PyType>,
        (
            Vec<[f32; 4]>,
            Vec<f32>,
            Option<Vec<[[f32; 2]; 5]>>,
            u32,
            u32,
        ),
    ) {
        let f = slf.get();
        let landmarks = f.landmark_sets();
        (
            slf.get_type(),
            (
                f.faces.iter().map(|x| x.bbox).collect(),
                f.faces.iter().map(|x| x.score).collect(),
                landmarks,
                f.width,
                f.height,
            ),
        )
    }

    /// (N, 4) float32 boxes, [x1, y1, x2, y2].
    #[getter]
    fn boxes<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray2<f32>> {
        let flat: Vec<f32> = self.faces.iter().flat_map(|f| f.bbox).collect();
        let array =
            Array2::from_shape_vec((self.faces.len(), 4), flat).expect("four values per face");
        PyArray2::from_owned_array(py, array)
    }

    /// (N,) float32 scores.
    #[getter]
    fn scores<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f32>> {
        let scores: Array1<f32> = self.faces.iter().map(|f| f.score).collect();
        PyArray1::from_owned_array(py, scores)
    }

    /// (N, 5, 2) float32 landmarks, or None for a model without a landmark head.
    #[getter]
    fn landmarks<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray3<f32>>> {
        let flat: Vec<f32> = self
            .landmark_sets()?
            .into_iter()
            .flatten()
            .flatten()
            .collect();
        let array =
            Array3::from_shape_vec((self.faces.len(), 5, 2), flat).expect("ten values per face");
        Some(PyArray3::from_owned_array(py, array))
    }

    /// The image's width in pixels.
    #[getter]
    fn width(&self) -> u32 {
        self.width
    }

    /// The image's height in pixels.
    #[getter]
    fn height(&self) -> u32 {
        self.height
    }

    fn __len__(&self) -> usize {
        self.faces.len()
    }

    fn __getitem__(&self, index: isize) -> PyResult<Face> {
        let n = self.faces.len() as isize;
        let i = if index < 0 { index + n } else { index };
        if !(0..n).contains(&i) {
            return Err(PyIndexError::new_err(format!(
                "face index {index} out of range for {n} face(s)"
            )));
        }
        Ok(Face(self.faces[i as usize]))
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyResult<Bound<'_, PyAny>> {
        let py = slf.py();
        let list = PyList::new(py, slf.faces.iter().map(|f| Face(*f)))?;
        list.try_iter().map(Bound::into_any)
    }

    /// The faces as dicts `{"box": [...], "score": s, "landmarks": [[x, y] × 5]}`, the
    /// schema of `retinaface detect --json`.
    fn to_list<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let dicts = self
            .faces
            .iter()
            .map(|f| Face(*f).record(py))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, dicts)
    }

    fn __repr__(&self) -> String {
        format!(
            "<Faces: {} face(s) in a {}×{} image>",
            self.faces.len(),
            self.width,
            self.height
        )
    }
}

/// One detected face: `box` (x1, y1, x2, y2), `score`, and `landmarks` (five (x, y) pairs, or
/// None).
#[pyclass(module = "retinaface_rs", frozen)]
#[derive(Clone, Copy)]
pub struct Face(pub RustFace);

#[pymethods]
impl Face {
    /// (x1, y1, x2, y2) in pixels.
    #[getter(r#box)]
    fn bbox(&self) -> (f32, f32, f32, f32) {
        let [a, b, c, d] = self.0.bbox;
        (a, b, c, d)
    }

    /// The face probability.
    #[getter]
    fn score(&self) -> f32 {
        self.0.score
    }

    /// Five (x, y) pairs: left eye, right eye, nose tip, left and right mouth corner.
    #[getter]
    fn landmarks(&self) -> Option<Vec<(f32, f32)>> {
        self.0
            .landmarks
            .map(|l| l.iter().map(|&[x, y]| (x, y)).collect())
    }

    /// `{"box": [...], "score": s, "landmarks": [[x, y] × 5]}` (no landmarks key without them).
    #[pyo3(name = "to_dict")]
    fn record<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("box", self.0.bbox.to_vec())?;
        d.set_item("score", self.0.score)?;
        if let Some(l) = self.0.landmarks {
            d.set_item(
                "landmarks",
                l.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
            )?;
        }
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let [a, b, c, d] = self.0.bbox;
        format!(
            "Face(box=({a:.1}, {b:.1}, {c:.1}, {d:.1}), score={:.4})",
            self.0.score
        )
    }
}
