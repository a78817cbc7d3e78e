//! Panics of dependencies (image decoders, the C JPEG library, burn) turned into errors, so
//! that one file's failure is that file's error and nothing is printed on standard error.
//!
//! Rust's panic hook prints before unwinding starts. While any [`catch`] is running, the hook
//! installed here stays silent; the caller reports the message as the file's one error line.
//! Other panics print as usual.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;

/// Guards running now, across threads: rayon's workers panic on their own threads and the
/// panic is re-raised on the caller's, so a thread-local flag would miss them.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ACTIVE.load(Ordering::SeqCst) == 0 {
                previous(info);
            }
        }));
    });
}

struct Active;

impl Active {
    fn enter() -> Active {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Run `f`; a panic inside it becomes `Err(message)`, printed nowhere.
///
/// Only for work whose state is discarded on failure (one file's decoding or detection): the
/// closure is treated as unwind-safe.
pub fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    install_hook();
    let _active = Active::enter();
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| message(payload.as_ref()))
}

/// The text of a panic payload.
pub fn message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_its_message() {
        let r: Result<(), String> = catch(|| panic!("bad palette index {}", 7));
        assert_eq!(r, Err("bad palette index 7".to_string()));
        assert_eq!(catch(|| 3), Ok(3));
        assert_eq!(ACTIVE.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn panics_on_rayon_workers_are_caught() {
        use rayon::prelude::*;
        let r = catch(|| {
            (0..64).into_par_iter().for_each(|i| {
                if i == 63 {
                    panic!("worker {i}");
                }
            })
        });
        assert_eq!(r, Err("worker 63".to_string()));
    }
}
