//! Which SIMD kernels run: the best the CPU supports, detected once at first use, or the one
//! `RETINAFACE_SIMD=portable|avx2|avx512` forces (when the CPU has it).

use std::sync::OnceLock;

/// A family of kernels. Every kernel has a portable version; the others are x86-64 only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simd {
    /// Plain Rust, any target (the compiler's own vectorisation).
    Portable,
    /// AVX2 + FMA, 8 lanes.
    Avx2,
    /// AVX-512F, 16 lanes.
    Avx512,
}

impl Simd {
    /// Every path, best first.
    pub const ALL: [Simd; 3] = [Simd::Avx512, Simd::Avx2, Simd::Portable];

    /// The name `RETINAFACE_SIMD` takes.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
            Simd::Avx512 => "avx512",
        }
    }

    /// Parse a `RETINAFACE_SIMD` value.
    pub fn parse(s: &str) -> Option<Simd> {
        Simd::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s.trim()))
    }

    /// Whether this CPU can run the path.
    pub fn supported(self) -> bool {
        match self {
            Simd::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Simd::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The path the engine uses (decided once per process).
    pub fn active() -> Simd {
        static ACTIVE: OnceLock<Simd> = OnceLock::new();
        *ACTIVE.get_or_init(choose)
    }
}

fn choose() -> Simd {
    let best = || {
        Simd::ALL
            .into_iter()
            .find(|p| p.supported())
            .unwrap_or(Simd::Portable)
    };
    let Ok(v) = std::env::var("RETINAFACE_SIMD") else {
        return best();
    };
    match Simd::parse(&v) {
        Some(p) if p.supported() => p,
        Some(p) => {
            let b = best();
            eprintln!(
                "RETINAFACE_SIMD={}: this CPU cannot run it; using {}",
                p.name(),
                b.name()
            );
            b
        }
        None => {
            let b = best();
            eprintln!(
                "RETINAFACE_SIMD={v:?} is not portable, avx2 or avx512; using {}",
                b.name()
            );
            b
        }
    }
}
